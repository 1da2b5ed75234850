//! Budgets judged after each batch: transitions announced, holds enforced, kill orders sent
//! (one at a time per target), enforcement recorded.

use super::*;

/// Most firing alerts holding targets at once (Alertmanager sends one per rule and label set:
/// a few per sidecar in practice); beyond it an alert stops its target once, without a hold.
pub(super) const MAX_ALERT_HOLDS: usize = 256;

impl Ledger {
    pub(super) fn charge_reading(&mut self, reading: &TargetReading, now: i64) {
        if self.budgets.is_empty() {
            return;
        }
        let target = Some(reading.target.as_str());
        let disk = (reading.read_bytes + reading.written_bytes) as f64;
        for (resource, amount) in [
            (Resource::CpuSeconds, reading.cpu_seconds),
            (Resource::DiskBytes, disk),
        ] {
            self.budgets.charge(
                &Charge {
                    resource,
                    amount,
                    ts_ms: now,
                    agent: None,
                    target,
                },
                now,
            );
        }
        self.budgets
            .set_memory(&reading.target, reading.rss_bytes as f64);
    }

    /// Moves windows, announces transitions, orders kills, refreshes the budget series; the
    /// states it judged by, for the view (computed once a batch).
    pub(super) fn judge_budgets(&mut self, now: i64) -> Vec<BudgetStatus> {
        if self.budgets.is_empty() {
            // Firing alerts hold targets with no budget configured here.
            self.enforce_holds(&[]);
            return Vec::new();
        }
        let transitions = self.budgets.evaluate(now);
        let statuses = self.budgets.status(now);
        for transition in transitions {
            let spec = self.budgets.specs()[transition.budget].clone();
            let status = &statuses[transition.budget];
            let labels = self.budget_labels(&spec.name, spec.resource, spec.fleet);
            let event = transition.kind.event_name();
            match transition.kind {
                TransitionKind::Warning => {
                    self.metrics
                        .budget_warnings_total
                        .get_or_create(&labels)
                        .inc();
                    warn!(event, budget = %spec.name, resource = spec.resource.label(), used = transition.used, limit = transition.limit, "budget warning");
                }
                TransitionKind::Exceeded => {
                    self.metrics
                        .budget_exceeded_total
                        .get_or_create(&labels)
                        .inc();
                    error!(event, budget = %spec.name, resource = spec.resource.label(), used = transition.used, limit = transition.limit, on_exceed = ?spec.on_exceed, "BUDGET_EXCEEDED");
                    if spec.on_exceed == OnExceed::SoftKill {
                        let targets = match &spec.scope {
                            Scope::Target(target) => vec![target.clone()],
                            _ => self.enforceable_targets.clone(),
                        };
                        self.health
                            .set_kill_cause(&format!("budget '{}' exceeded", spec.name));
                        for target in targets {
                            self.order_kill(KillOrder {
                                target,
                                reason: format!("budget '{}' exceeded", spec.name),
                            });
                        }
                    }
                }
                TransitionKind::Reset => {
                    info!(event, budget = %spec.name, resource = spec.resource.label(), used = transition.used, limit = transition.limit, "budget back to ok");
                }
            }
            if self.webhook.is_some() {
                self.webhook_batch.push(crate::wire::BudgetNotice {
                    event: transition.kind,
                    budget: spec.name.clone(),
                    resource: spec.resource,
                    used: transition.used,
                    limit: transition.limit,
                    ratio: transition.used / transition.limit,
                    window: status.window.clone(),
                    window_start: status.window_start.clone(),
                    window_end: status.window_end.clone(),
                    on_exceed: spec.on_exceed,
                    at: crate::report::iso(now),
                });
            }
            if self.spans.is_some() {
                self.span_batch.push(spans::SpanInput::Transition(
                    now,
                    event.to_string(),
                    spec.name.clone(),
                    spec.resource.label().to_string(),
                ));
            }
            let state = status.state.label();
            if let Err(failure) =
                self.store
                    .save_budget_state(&spec.name, status.window_start_ms.unwrap_or(0), state)
            {
                warn!(error = %failure, budget = %spec.name, "cannot record the budget state; it may be announced again after a restart");
            }
        }
        self.enforce_holds(&statuses);
        self.publish_budget_series(&statuses);
        statuses
    }

    /// Exceeded is a state: every target an exceeded hard budget holds is stopped again
    /// whenever a reading shows it alive — a new session, a restarted agent, a late child —
    /// after a restart of costmeter too, since the state is rebuilt from the store.
    pub(super) fn enforce_holds(&mut self, statuses: &[BudgetStatus]) {
        let held = holds(statuses, &self.enforceable_targets);
        // A dry run says once per hold what it would do, not at every sample.
        self.dry_run_told
            .retain(|target| held.iter().any(|h| &h.target == target));
        for hold in held {
            if self.kills_in_flight.contains(&hold.target)
                || !self.seen_alive.contains(&hold.target)
                || (self.dry_run && !self.dry_run_told.insert(hold.target.clone()))
            {
                continue;
            }
            let reason = format!("budget '{}' exceeded", hold.budget);
            self.health.set_kill_cause(&reason);
            self.order_kill(KillOrder {
                target: hold.target,
                reason,
            });
        }
        // A firing alert is a state too: its target is stopped again while it fires.
        let repeats: Vec<KillOrder> = self
            .alert_holds
            .values()
            .filter(|o| {
                !self.kills_in_flight.contains(&o.target) && self.seen_alive.contains(&o.target)
            })
            .cloned()
            .collect();
        for order in repeats {
            self.order_kill(order);
        }
    }

    /// An alert's hold begins (firing: the target is stopped now) or ends (resolved).
    pub(super) fn alert_hold(&mut self, key: String, order: Option<KillOrder>) {
        match order {
            Some(order) => {
                self.health.set_kill_cause(&order.reason);
                if self.alert_holds.len() < MAX_ALERT_HOLDS || self.alert_holds.contains_key(&key) {
                    self.alert_holds.insert(key, order.clone());
                } else {
                    // A flood of distinct alerts cannot grow the ledger: this one acts once.
                    warn!(target_name = %order.target, reason = %order.reason, limit = MAX_ALERT_HOLDS, "too many firing alerts hold targets; this one stops its target once, without a hold");
                }
                self.order_kill(order);
            }
            None => {
                if let Some(order) = self.alert_holds.remove(&key) {
                    info!(target_name = %order.target, reason = %order.reason, "alert resolved; its hold ends");
                }
            }
        }
    }

    /// The exceeded hard budgets that hold `target` now, read from the store at start: what
    /// `costmeter exec` checks before it starts its command.
    pub fn holding(&self, target: &str, now: i64) -> Vec<BudgetStatus> {
        let me = [target.to_string()];
        self.budgets
            .status(now)
            .into_iter()
            .filter(|s| {
                holds(std::slice::from_ref(s), &me)
                    .iter()
                    .any(|h| h.target == target)
            })
            .collect()
    }

    fn budget_labels(
        &self,
        name: &str,
        resource: crate::budget::Resource,
        fleet: bool,
    ) -> BudgetLabels {
        BudgetLabels {
            budget: name.to_string(),
            resource: resource.label().to_string(),
            fleet: self.fleet_name.clone().filter(|_| fleet),
        }
    }

    pub(super) fn publish_budget_series(&self, statuses: &[BudgetStatus]) {
        let m = &self.metrics;
        for status in statuses {
            let labels = self.budget_labels(&status.name, status.resource, status.fleet);
            m.budget_limit.get_or_create(&labels).set(status.limit);
            m.budget_used.get_or_create(&labels).set(status.used);
            m.budget_utilization_ratio
                .get_or_create(&labels)
                .set(status.ratio);
            m.budget_state
                .get_or_create(&labels)
                .set(status.state as i64);
            match status.window_end_ms {
                Some(end) => {
                    m.budget_window_end_timestamp_seconds
                        .get_or_create(&labels)
                        .set(end as f64 / 1000.0);
                }
                None => {
                    m.budget_window_end_timestamp_seconds.remove(&labels);
                }
            }
            match status.projected_exhaustion_seconds {
                Some(seconds) => {
                    m.budget_projected_exhaustion_seconds
                        .get_or_create(&labels)
                        .set(seconds);
                }
                None => {
                    m.budget_projected_exhaustion_seconds.remove(&labels);
                }
            }
        }
    }

    pub(super) fn order_kill(&mut self, order: KillOrder) {
        if self.kills_in_flight.contains(&order.target) {
            info!(target_name = %order.target, reason = %order.reason, "soft-kill already under way for this target");
            return;
        }
        match &self.enforcer {
            Some(enforcer) => {
                warn!(target_name = %order.target, reason = %order.reason, "soft-kill ordered");
                let target = order.target.clone();
                if enforcer.send(EnforcerInput::Kill(order)).is_err() {
                    error!("the enforcer stopped; no process was signalled");
                } else {
                    self.seen_alive.remove(&target);
                    self.kills_in_flight.insert(target);
                }
            }
            None => {
                error!(target_name = %order.target, reason = %order.reason, "no enforcer running; no process was signalled")
            }
        }
    }

    pub(super) fn record_enforcement(&mut self, report: &KillReport, now: i64) {
        if report.signalled + report.killed == 0 && report.refused.is_empty() {
            // The target was already gone: nothing was done, nothing to record.
            info!(target_name = %report.target, reason = %report.reason, "soft-kill found no process to stop");
            return;
        }
        if !report.dry_run && report.signalled + report.killed > 0 {
            let m = &self.metrics;
            let target = m.cap.admit("target", &report.target);
            if report.signalled > 0 {
                m.soft_kills_total
                    .get_or_create(&SoftKillLabels {
                        target: target.clone(),
                        signal: report.signal.clone(),
                    })
                    .inc_by(report.signalled as u64);
            }
            if report.killed > 0 {
                m.soft_kills_total
                    .get_or_create(&SoftKillLabels {
                        target,
                        signal: "SIGKILL".into(),
                    })
                    .inc_by(report.killed as u64);
            }
        }
        if let Err(failure) = self.store.record_enforcement(
            now,
            &report.target,
            &report.reason,
            &report.signal,
            report.signalled,
            report.killed,
            &report.refused,
            report.dry_run,
        ) {
            warn!(error = %failure, "cannot record the enforcement action");
        }
        info!(target_name = %report.target, reason = %report.reason, signal = %report.signal, signalled = report.signalled, killed = report.killed, refused = report.refused.len(), dry_run = report.dry_run, "enforcement recorded");
    }
}

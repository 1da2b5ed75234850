//! Opening the ledger: the store, the price table, and every total and budget state put back
//! where the store says they were.

use super::*;

impl Ledger {
    /// Opens the store and the price table, at `now` (ms), and puts the metrics back where the store says they
    /// were. Returns the sampler baselines to resume from.
    pub fn open(
        config: &Config,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        now: i64,
    ) -> Result<(Ledger, StoredBaselines), LedgerError> {
        let store = Store::open(&config.store.path)?;
        let prices = PriceTable::load(
            config.pricing.manifest.as_deref(),
            &config.pricing.overrides,
        )?;
        for source in [
            PriceSource::Baseline,
            PriceSource::Manifest,
            PriceSource::Config,
        ] {
            let labels = crate::metrics::SourceLabels {
                source: source.label().to_string(),
            };
            let models = prices.models_by_source.get(&source).copied().unwrap_or(0);
            let rejected = prices
                .rejected
                .iter()
                .filter(|r| r.source == source)
                .count();
            metrics
                .pricing_models
                .get_or_create(&labels)
                .set(i64::try_from(models).unwrap_or(0));
            metrics
                .pricing_rejected_rows
                .get_or_create(&labels)
                .set(i64::try_from(rejected).unwrap_or(0));
        }
        for row in &prices.rejected {
            warn!(source = row.source.label(), model = %row.model, reason = %row.reason, "price row rejected");
        }
        let mut ledger = Ledger {
            usage_series: HashMap::new(),
            usage_series_len: 0,
            event_counters: HashMap::new(),
            store,
            prices,
            metrics,
            health,
            unknown_models: HashMap::new(),
            retention: config.store.retention,
            last_compaction: None,
            budgets: Budgets::new(config.budgets.clone(), now),
            enforceable_targets: enforceable(config),
            enforcer: None,
            kills_in_flight: HashSet::new(),
            alert_holds: Default::default(),
            seen_alive: HashSet::new(),
            settling: HashSet::new(),
            dry_run: config.enforcement.dry_run,
            dry_run_told: HashSet::new(),
            webhook: None,
            spans: None,
            view: SharedView::default(),
            pricing_changed: true,
            reservations: crate::budget::Reservations::default(),
            fleet_link: None,
            fleet_policy: crate::config::OnFleetUnavailable::default(),
            fleet_instances: 1,
            fleet_name: None,
            silence: crate::silence::Silence::default(),
            span_batch: Vec::new(),
            webhook_batch: Vec::new(),
            status_files: None,
            stale_runs: std::collections::BTreeSet::new(),
            report: config.report.clone(),
            last_report: None,
            otlp: crate::otlp::OtlpState::default(),
            spend: crate::spend::SharedSpend::default(),
            spend_batch: Vec::new(),
        };
        ledger.otlp = ledger.store.otlp_state()?;
        if let Some(template) = &config.status_file {
            ledger.status_files = Some(
                crate::status_files::StatusFiles::spawn(
                    template.clone(),
                    config.store.path.clone(),
                )
                .map_err(LedgerError::Thread)?,
            );
        }
        if ledger.report.is_some() {
            ledger.health.set_report(None);
        }
        ledger.compact_if_due(now);
        let totals = ledger.store.totals()?;
        ledger.restore(&totals);
        ledger.restore_budgets(now)?;
        {
            let mut spend = ledger
                .spend
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for hour in ledger.store.spend_by_hour(now - crate::spend::KEPT_MS)? {
                spend.add(&hour, now);
            }
        }
        let baselines = ledger.store.baselines()?;
        info!(
            store = %ledger.store.path().display(),
            events = ledger.store.event_count()?,
            priced_models = ledger.prices.len(),
            "ledger opened"
        );
        // Reads answer from the view: it holds the restored state before any input arrives.
        let statuses = ledger.budgets.status(now);
        ledger.publish(now, statuses);
        Ok((ledger, baselines))
    }

    /// Moves every counter to the stored totals.
    pub(super) fn restore(&mut self, totals: &Totals) {
        let m = &self.metrics;
        for usage in &totals.usage {
            let (agent, model) = m.cap.admit_usage(&usage.agent, &usage.model);
            for (kind, tokens) in [
                (TokenKind::input, usage.uncached_input_tokens),
                (TokenKind::cache_read, usage.cache_read_tokens),
                (TokenKind::cache_write, usage.cache_write_tokens),
                (TokenKind::output, usage.output_tokens),
            ] {
                m.tokens_total
                    .get_or_create(&TokenLabels {
                        agent: agent.clone(),
                        model: model.clone(),
                        kind,
                    })
                    .inc_by(tokens, None, None);
            }
            m.usd_spend_total
                .get_or_create(&SpendLabels { agent, model })
                .0
                .inc_by(usage.cost_usd, None, None);
        }
        for (model, events, tokens) in &totals.unknown_models {
            let name = if self.unknown_models.len() < MAX_UNKNOWN_MODELS {
                model.clone()
            } else {
                crate::metrics::OVERFLOW_VALUE.to_string()
            };
            let entry = self
                .unknown_models
                .entry(name)
                .or_insert_with_key(|name| UnknownModel {
                    model: name.clone(),
                    events: 0,
                    tokens: 0,
                });
            entry.events += *events;
            entry.tokens += *tokens;
            let labels = crate::metrics::ModelLabels {
                model: m.cap.admit("model", model),
            };
            m.unknown_model_events_total
                .get_or_create(&labels)
                .inc_by(*events);
            m.unknown_model_tokens_total
                .get_or_create(&labels)
                .inc_by(*tokens);
        }
        for (task_type, result, count) in &totals.tasks {
            m.task_total
                .get_or_create(&TaskLabels {
                    r#type: m.cap.admit("type", task_type),
                    result: result.clone(),
                })
                .inc_by(*count);
        }
        for (task_type, seconds) in &totals.task_durations {
            m.task_duration_seconds
                .get_or_create(&TaskTypeLabels {
                    r#type: m.cap.admit("type", task_type),
                })
                .observe(*seconds, None, None);
        }
        for seconds in &totals.lock_waits {
            m.registry_lock_wait_seconds.observe(*seconds);
        }
        for (source, event_type, count) in &totals.events {
            m.events_total
                .get_or_create(&crate::metrics::EventLabels {
                    source: source.clone(),
                    r#type: event_type.clone(),
                    result: "accepted".into(),
                })
                .inc_by(*count);
        }
        for resource in &totals.resources {
            m.add_target_usage(
                &resource.target,
                resource.cpu_seconds,
                resource.read_bytes,
                resource.written_bytes,
                resource.peak_rss_bytes,
            );
        }
    }

    /// Replays stored usage into the budgets and restores recorded states, so totals and
    /// states survive a restart and a transition that fired does not fire again.
    pub(super) fn restore_budgets(&mut self, now: i64) -> Result<(), LedgerError> {
        if self.budgets.is_empty() {
            return Ok(());
        }
        for charge in self.store.usage_charges()? {
            for (resource, amount) in [
                (Resource::Usd, charge.first),
                (Resource::Tokens, charge.second),
            ] {
                self.budgets.charge(
                    &Charge {
                        resource,
                        amount,
                        ts_ms: charge.ts_ms,
                        agent: Some(&charge.owner),
                        target: None,
                    },
                    now,
                );
            }
        }
        for charge in self.store.resource_charges()? {
            for (resource, amount) in [
                (Resource::CpuSeconds, charge.first),
                (Resource::DiskBytes, charge.second),
            ] {
                self.budgets.charge(
                    &Charge {
                        resource,
                        amount,
                        ts_ms: charge.ts_ms,
                        agent: None,
                        target: Some(&charge.owner),
                    },
                    now,
                );
            }
        }
        for (name, window_start, state) in self.store.budget_states()? {
            if let Some(state) = State::parse(&state) {
                self.budgets.restore_state(&name, window_start, state);
            }
        }
        Ok(())
    }
}

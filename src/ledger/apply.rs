//! Moving the series for newly stored events: tokens, USD, tasks, unknown models.

use super::*;

impl Ledger {
    pub(super) fn count_event(
        &mut self,
        source: &'static str,
        event_type: &'static str,
        result: &'static str,
    ) {
        self.count_events(source, event_type, result, 1);
    }

    pub(super) fn count_events(
        &mut self,
        source: &'static str,
        event_type: &'static str,
        result: &'static str,
        n: u64,
    ) {
        if n == 0 {
            return;
        }
        let metrics = &self.metrics;
        self.event_counters
            .entry((source, event_type, result))
            .or_insert_with(|| {
                metrics
                    .events_total
                    .get_or_create(&crate::metrics::EventLabels {
                        source: source.to_string(),
                        r#type: event_type.to_string(),
                        result: result.to_string(),
                    })
                    .clone()
            })
            .inc_by(n);
    }

    /// The token and USD series of one agent and model, from the cache when possible.
    pub(super) fn usage_series(&mut self, agent: &str, model: &str) -> UsageSeries {
        if let Some(series) = self.usage_series.get(agent).and_then(|m| m.get(model)) {
            return series.clone();
        }
        let m = &self.metrics;
        let (agent_label, model_label) = m.cap.admit_usage(agent, model);
        let token = |kind| {
            m.tokens_total
                .get_or_create(&TokenLabels {
                    agent: agent_label.clone(),
                    model: model_label.clone(),
                    kind,
                })
                .clone()
        };
        let series = UsageSeries {
            tokens: [
                token(TokenKind::input),
                token(TokenKind::cache_read),
                token(TokenKind::cache_write),
                token(TokenKind::output),
            ],
            usd: m
                .usd_spend_total
                .get_or_create(&SpendLabels {
                    agent: agent_label.clone(),
                    model: model_label.clone(),
                })
                .clone(),
        };
        // Only names that kept their own label are cached, so a flood of names folded into
        // __other__ cannot grow the cache past the cardinality cap.
        if agent_label == agent && model_label == model && self.usage_series_len < MAX_CACHED_SERIES
        {
            self.usage_series_len += 1;
            self.usage_series
                .entry(agent.to_string())
                .or_default()
                .insert(model.to_string(), series.clone());
        }
        series
    }

    /// Moves the series for one newly stored event.
    pub(super) fn apply(&mut self, priced: &PricedEvent, now: i64) {
        let metrics = self.metrics.clone();
        let m = &metrics;
        let event = &priced.event;
        let exemplar = event.trace_id.as_ref().map(|trace_id| TraceLabels {
            trace_id: trace_id.clone(),
        });
        self.count_event(priced.source, event.body.type_name(), "accepted");
        if self.spans.is_some() && spans::makes_span(event) {
            self.span_batch
                .push(spans::SpanInput::Ended(Box::new(event.clone())));
        }
        if let EventBody::TaskEnd { run_id, .. } = &event.body
            && self.status_files.is_some()
        {
            self.stale_runs.insert(
                run_id
                    .clone()
                    .unwrap_or_else(|| crate::status_files::NO_RUN.to_string()),
            );
        }
        match &event.body {
            EventBody::LlmUsage(usage) => {
                let series = self.usage_series(&usage.agent, &usage.model);
                let counts = [
                    usage.uncached_input_tokens(),
                    usage.cache_read_tokens,
                    usage.cache_write_tokens,
                    usage.output_tokens,
                ];
                for (counter, tokens) in series.tokens.iter().zip(counts) {
                    if tokens > 0 {
                        counter.inc_by(tokens, exemplar.clone(), None);
                    }
                }
                let cost = priced.cost.map_or(0.0, |c| c.usd);
                // The rollup buckets the event's time into its hour.
                self.spend_batch.push(crate::store::HourlySpend {
                    hour_ms: event.ts_ms,
                    agent: usage.agent.clone(),
                    model: usage.model.clone(),
                    tokens: usage.input_tokens + usage.output_tokens,
                    kinds: counts,
                    usd: cost,
                    events: 1,
                    confidence: priced
                        .cost
                        .map_or("unknown_model", |c| c.confidence.label())
                        .to_string(),
                });
                series.usd.0.inc_by(cost, exemplar, None);
                if let Some(c) = priced.cost {
                    let labels = crate::metrics::ConfidenceLabels {
                        confidence: c.confidence.label(),
                    };
                    m.cost_events_total.get_or_create(&labels).inc();
                    m.cost_usd_total.get_or_create(&labels).inc_by(c.usd);
                }
                let tokens = (usage.input_tokens + usage.output_tokens) as f64;
                for (resource, amount) in [(Resource::Usd, cost), (Resource::Tokens, tokens)] {
                    self.budgets.charge(
                        &Charge {
                            resource,
                            amount,
                            ts_ms: charge_time(event.ts_ms, now),
                            agent: Some(&usage.agent),
                            target: None,
                        },
                        now,
                    );
                }
                if priced
                    .cost
                    .is_some_and(|c| c.confidence == Confidence::UnknownModel)
                {
                    let tokens = usage.input_tokens + usage.output_tokens;
                    // Bounded: past MAX_UNKNOWN_MODELS names, new ones are tallied under
                    // __other__; each name is logged once, the first MAX_LOGGED_UNKNOWN only.
                    let known = self.unknown_models.len();
                    let name = if known < MAX_UNKNOWN_MODELS
                        || self.unknown_models.contains_key(&usage.model)
                    {
                        usage.model.clone()
                    } else {
                        crate::metrics::OVERFLOW_VALUE.to_string()
                    };
                    let entry = self.unknown_models.entry(name).or_insert_with_key(|name| {
                        if known < MAX_LOGGED_UNKNOWN {
                            warn!(model = %name, agent = %usage.agent, "no price for this model: its usage counts 0 USD until a price is configured ([pricing] manifest or [pricing.models])");
                        } else if known == MAX_LOGGED_UNKNOWN {
                            warn!(models = known, "more models without a price: no longer logged one by one; `costmeter pricing status` lists them");
                        }
                        UnknownModel { model: name.clone(), events: 0, tokens: 0 }
                    });
                    entry.events += 1;
                    entry.tokens += tokens;
                    self.pricing_changed = true;
                    self.health.record_unpriced(&usage.model, now);
                    let labels = crate::metrics::ModelLabels {
                        model: m.cap.admit("model", &usage.model),
                    };
                    m.unknown_model_events_total.get_or_create(&labels).inc();
                    m.unknown_model_tokens_total
                        .get_or_create(&labels)
                        .inc_by(tokens);
                }
            }
            EventBody::TaskEnd {
                task_id,
                task_type,
                outcome,
                ..
            } => {
                let task_type = m.cap.admit("type", task_type);
                m.task_total
                    .get_or_create(&TaskLabels {
                        r#type: task_type.clone(),
                        result: outcome.result.clone(),
                    })
                    .inc();
                match self.store.task_started_ms(task_id) {
                    Ok(Some(started)) if started <= event.ts_ms => {
                        m.task_duration_seconds
                            .get_or_create(&TaskTypeLabels { r#type: task_type })
                            .observe((event.ts_ms - started) as f64 / 1000.0, exemplar, None);
                    }
                    Ok(_) => {}
                    Err(failure) => {
                        warn!(error = %failure, task_id = %task_id, "cannot read the task's start")
                    }
                }
            }
            EventBody::LockWait { seconds, .. } => m.registry_lock_wait_seconds.observe(*seconds),
            EventBody::RunEnd { .. } | EventBody::FileWrite { .. } => {}
            EventBody::RunStart { .. } | EventBody::TaskStart { .. } => {}
        }
    }
}

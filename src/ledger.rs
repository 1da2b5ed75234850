//! The ledger: the one owner of running totals and of the store.
//!
//! Every source sends what it saw here over one bounded channel. The ledger runs on its own OS
//! thread (SQLite calls block), takes whatever is queued as one batch, writes it in one
//! transaction (group commit), and only then moves the metrics and answers the senders. So a
//! 2xx always means "on disk", and there is one place to read when a number looks wrong.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::CounterWithExemplar;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use serde_json::json;

use crate::budget::{
    BudgetStatus, Budgets, Charge, OnExceed, Resource, Scope, State, TransitionKind, charge_time,
    holds,
};
use crate::config::Config;
use crate::enforce::{EnforcerInput, KillOrder, KillReport};
use crate::health::Health;
use crate::ingest::event::check_age;
use crate::ingest::{Event, EventBody};
use crate::metrics::{BudgetLabels, SoftKillLabels};
use crate::metrics::{
    Metrics, SpendLabels, TaskLabels, TaskTypeLabels, TokenKind, TokenLabels, TraceLabels,
    UsdCounter,
};
use crate::notify::Webhook;
use crate::pricing::{Confidence, PriceSource, PriceTable, PricingError, RejectedRow};
use crate::sampler::{StoredBaselines, TargetReading};
use crate::store::{PricedEvent, ResourceRow, Store, StoreError, Totals};
use crate::telemetry::{SpanRecord, Telemetry, derived_span_id, derived_trace_id, hex_bytes};
use opentelemetry::KeyValue;
use std::collections::VecDeque;

/// How many inputs may wait before senders are slowed down.
pub const LEDGER_QUEUE: usize = 8192;
/// Most inputs folded into one transaction.
const MAX_BATCH: usize = 4096;
/// Budget transitions kept to become span events.
const MAX_RECENT_TRANSITIONS: usize = 256;
/// How often old rows are folded into daily rollups.
const COMPACTION_EVERY: Duration = Duration::from_secs(3600);

/// What sources send to the ledger.
#[derive(Debug)]
pub enum LedgerInput {
    /// Validated events from one request, and the type labels of the ones it rejected.
    Events {
        source: &'static str,
        events: Vec<Event>,
        rejected: Vec<&'static str>,
        reply: oneshot::Sender<Result<EventsAnswer, String>>,
    },
    /// One OTLP export request, mapped; cumulative streams become deltas here.
    Otlp {
        mapped: crate::otlp::Mapped,
        reply: oneshot::Sender<Result<OtlpAnswer, String>>,
    },
    Reading(TargetReading),
    /// A target was removed from the config: its gauges go.
    TargetRemoved(String),
    PricingStatus(oneshot::Sender<PricingStatus>),
    /// Every budget's state now.
    Budgets(oneshot::Sender<Vec<BudgetStatus>>),
    /// An order from outside (Alertmanager) to stop a local target.
    Enforce(KillOrder),
    /// A request refused unread for its size: counted, logged, shown by `doctor`; for OTLP,
    /// its signal's family claims lapse so the same usage through another signal counts.
    Refused {
        refusal: crate::health::Refusal,
        signal: Option<crate::otlp::Signal>,
    },
    /// A request refused by the cross-site guard or for its content type: counted, and logged
    /// at growing intervals so a flood cannot flood the log.
    Blocked {
        route: crate::health::Route,
        reason: crate::health::RefusalReason,
    },
    /// What enforcement did, to count and record.
    Enforced(KillReport),
}

/// What became of one request's events: for each stored one, whether it was new (else a
/// duplicate), in order; and the events refused here, by their index in the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsAnswer {
    pub fresh: Vec<bool>,
    pub refused: Vec<(usize, String)>,
}

/// What became of one OTLP request's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpAnswer {
    pub accepted: usize,
    /// Usage already counted: resent, or reported by another signal of the same agent.
    pub duplicates: usize,
    /// Each refused item, with why.
    pub rejected: Vec<String>,
}

/// Sending side of the ledger, cloned into every source.
pub type LedgerSender = mpsc::Sender<LedgerInput>;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pricing(#[from] PricingError),
    #[error("cannot start a ledger thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// `GET /v1/pricing/status`.
#[derive(Debug, Clone, Serialize)]
pub struct PricingStatus {
    pub baseline_version: String,
    pub baseline_taken: String,
    pub manifest: Option<String>,
    pub models: HashMap<&'static str, usize>,
    pub rejected_rows: Vec<RejectedRow>,
    /// The most frequent unpriced models, at most a hundred.
    pub unknown_models: Vec<UnknownModel>,
    /// How many more models are unpriced than listed.
    pub unknown_models_omitted: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UnknownModel {
    pub model: String,
    pub events: u64,
    pub tokens: u64,
}

/// Models without a price tallied by name; more are tallied under `__other__`.
const MAX_UNKNOWN_MODELS: usize = 10_000;
/// Models without a price logged one by one.
const MAX_LOGGED_UNKNOWN: usize = 100;
/// Models without a price `/v1/pricing/status` lists, most events first.
const LISTED_UNKNOWN: usize = 100;

/// Most (agent, model) pairs whose series handles are cached.
const MAX_CACHED_SERIES: usize = 10_000;

/// Handles to one agent and model's series: the hot path then neither builds label sets nor
/// hashes them into the families again.
#[derive(Clone)]
struct UsageSeries {
    /// input, cache_read, cache_write, output.
    tokens: [CounterWithExemplar<TraceLabels>; 4],
    usd: UsdCounter,
}

pub struct Ledger {
    usage_series: HashMap<String, HashMap<String, UsageSeries>>,
    usage_series_len: usize,
    event_counters: HashMap<(&'static str, &'static str, &'static str), Counter>,
    store: Store,
    prices: PriceTable,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    unknown_models: HashMap<String, UnknownModel>,
    retention: Duration,
    last_compaction: Option<Instant>,
    budgets: Budgets,
    /// Names of the targets a budget without a target scope stops.
    enforceable_targets: Vec<String>,
    enforcer: Option<std::sync::mpsc::Sender<EnforcerInput>>,
    /// Targets with a kill order the enforcer has not reported on yet: one at a time each.
    kills_in_flight: HashSet<String>,
    /// Targets a reading showed alive since their last kill order: while an exceeded budget
    /// holds them, each such sighting is stopped again.
    seen_alive: HashSet<String>,
    /// `[enforcement] dry_run`, and the held targets a dry run already told about.
    dry_run: bool,
    dry_run_told: HashSet<String>,
    webhook: Option<Webhook>,
    telemetry: Option<Telemetry>,
    /// The `[status_file]` writer, and the runs whose file it has yet to be told about.
    status_files: Option<crate::status_files::StatusFiles>,
    stale_runs: std::collections::BTreeSet<String>,
    report: Option<crate::config::ReportConfig>,
    last_report: Option<Instant>,
    /// Recent budget transitions, to become span events on the spans open at the time.
    recent_transitions: VecDeque<(i64, String, String, String)>,
    /// Cumulative OTLP streams and which signal family meters each agent instance.
    otlp: crate::otlp::OtlpState,
}

/// Targets a budget without its own target scope stops: every configured target but the
/// sidecar itself.
fn enforceable(config: &Config) -> Vec<String> {
    config
        .targets
        .iter()
        .filter(|t| !matches!(t.selector, crate::config::Selector::OwnProcess))
        .map(|t| t.name.clone())
        .collect()
}

fn parse_ms(iso: Option<&str>) -> Option<i64> {
    iso?.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Ledger {
    /// Opens the store and the price table and puts the metrics back where the store says they
    /// were. Returns the sampler baselines to resume from.
    pub fn open(
        config: &Config,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
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
            budgets: Budgets::new(config.budgets.clone(), now_ms()),
            enforceable_targets: enforceable(config),
            enforcer: None,
            kills_in_flight: HashSet::new(),
            seen_alive: HashSet::new(),
            dry_run: config.enforcement.dry_run,
            dry_run_told: HashSet::new(),
            webhook: None,
            telemetry: None,
            status_files: None,
            stale_runs: std::collections::BTreeSet::new(),
            report: config.report.clone(),
            last_report: None,
            recent_transitions: VecDeque::new(),
            otlp: crate::otlp::OtlpState::default(),
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
        ledger.compact_if_due();
        let totals = ledger.store.totals()?;
        ledger.restore(&totals);
        ledger.restore_budgets()?;
        let baselines = ledger.store.baselines()?;
        info!(
            store = %ledger.store.path().display(),
            events = ledger.store.event_count()?,
            priced_models = ledger.prices.len(),
            "ledger opened"
        );
        Ok((ledger, baselines))
    }

    /// Moves every counter to the stored totals.
    fn restore(&mut self, totals: &Totals) {
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

    /// Runs the ledger on its own thread until every sender is gone.
    pub fn spawn(mut self) -> std::io::Result<(LedgerSender, std::thread::JoinHandle<()>)> {
        let (sender, mut inbox) = mpsc::channel::<LedgerInput>(LEDGER_QUEUE);
        let thread = std::thread::Builder::new()
            .name("costmeter-ledger".into())
            .spawn(move || {
                while let Some(first) = inbox.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match inbox.try_recv() {
                            Ok(input) => batch.push(input),
                            Err(_) => break,
                        }
                    }
                    self.process(batch);
                }
            })?;
        Ok((sender, thread))
    }

    fn process(&mut self, batch: Vec<LedgerInput>) {
        let received = now_ms();
        let mut requests = Vec::new();
        let mut priced: Vec<PricedEvent> = Vec::new();
        let mut readings = Vec::new();
        let mut otlp_rows = Vec::new();
        let mut otlp_undo = Vec::new();
        let mut otlp_requests = Vec::new();
        for input in batch {
            match input {
                LedgerInput::Events {
                    source,
                    events,
                    rejected,
                    reply,
                } => {
                    for event_type in &rejected {
                        self.count_event(source, event_type, "rejected");
                    }
                    let start = priced.len();
                    let mut refused = Vec::new();
                    for (index, event) in events.into_iter().enumerate() {
                        if let Err(problem) = check_age(event.ts_ms, received, self.retention) {
                            self.count_event(source, event.body.type_name(), "rejected");
                            refused.push((index, problem));
                            continue;
                        }
                        let cost = match &event.body {
                            EventBody::LlmUsage(usage) => Some(self.prices.cost(usage)),
                            _ => None,
                        };
                        priced.push(PricedEvent {
                            event,
                            source,
                            cost,
                        });
                    }
                    requests.push((start..priced.len(), refused, reply));
                }
                LedgerInput::Otlp { mapped, reply } => {
                    let resolved = self.otlp.resolve(mapped, received);
                    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
                    self.count_events(
                        crate::otlp::SOURCE,
                        "llm_usage",
                        "rejected",
                        count(resolved.rejected.len()),
                    );
                    self.count_events(
                        crate::otlp::SOURCE,
                        "llm_usage",
                        "duplicate",
                        count(resolved.duplicates),
                    );
                    let start = priced.len();
                    let mut resolved = resolved;
                    for event in std::mem::take(&mut resolved.events) {
                        if let Err(problem) = check_age(event.ts_ms, received, self.retention) {
                            self.count_event(crate::otlp::SOURCE, "llm_usage", "rejected");
                            resolved.rejected.push(problem);
                            continue;
                        }
                        let cost = match &event.body {
                            EventBody::LlmUsage(usage) => Some(self.prices.cost(usage)),
                            _ => None,
                        };
                        priced.push(PricedEvent {
                            event,
                            source: crate::otlp::SOURCE,
                            cost,
                        });
                    }
                    otlp_rows.extend(resolved.rows);
                    otlp_undo.push(resolved.undo);
                    otlp_requests.push((
                        start..priced.len(),
                        resolved.duplicates,
                        resolved.rejected,
                        reply,
                    ));
                }
                LedgerInput::Reading(reading) => readings.push(reading),
                LedgerInput::TargetRemoved(name) => self.metrics.forget_target(&name),
                LedgerInput::PricingStatus(reply) => {
                    let _ = reply.send(self.pricing_status());
                }
                LedgerInput::Budgets(reply) => {
                    let _ = reply.send(self.budgets.status(received));
                }
                LedgerInput::Enforce(order) => self.order_kill(order),
                LedgerInput::Refused { refusal, signal } => {
                    otlp_rows.extend(self.refused(refusal, signal, received));
                }
                LedgerInput::Blocked { route, reason } => self.blocked(route, reason),
                LedgerInput::Enforced(report) => {
                    // Sightings from before the report are of processes it just stopped.
                    self.kills_in_flight.remove(&report.target);
                    self.seen_alive.remove(&report.target);
                    self.record_enforcement(&report, received);
                }
            }
        }
        let rows: Vec<ResourceRow> = readings
            .iter()
            .map(|r| ResourceRow {
                ts_ms: received,
                target: r.target.clone(),
                cpu_seconds: r.cpu_seconds,
                read_bytes: r.read_bytes,
                written_bytes: r.written_bytes,
                rss_bytes: r.rss_bytes,
                peak_rss_bytes: r.peak_rss_bytes,
                baseline: r
                    .baseline
                    .as_ref()
                    .and_then(|b| serde_json::to_string(b).ok())
                    .map(|json| (r.selector.clone(), json)),
            })
            .collect();

        let outcome: Result<Vec<bool>, String> = if priced.is_empty()
            && rows.is_empty()
            && otlp_rows.is_empty()
        {
            // Only rejections were reported: they are counted; say so.
            Ok(Vec::new())
        } else {
            match self.store.commit(&priced, &rows, &otlp_rows, received) {
                Ok(fresh) => {
                    self.health.set_store(Ok(()));
                    for (event, is_new) in priced.iter().zip(&fresh) {
                        if *is_new {
                            self.apply(event, received);
                        } else {
                            self.count_event(
                                event.source,
                                event.event.body.type_name(),
                                "duplicate",
                            );
                        }
                    }
                    Ok(fresh)
                }
                Err(failure) => {
                    error!(error = %failure, "store write failed; events answered 503, nothing counted");
                    self.health.set_store(Err(failure.to_string()));
                    for undo in otlp_undo.into_iter().rev() {
                        self.otlp.rollback(undo);
                    }
                    Err(failure.to_string())
                }
            }
        };
        // Resource gauges and counters move even when the store failed: the deltas are then
        // counted again from the stored baseline after a restart, never lost.
        for reading in &readings {
            if reading.up && reading.processes > 0 {
                self.seen_alive.insert(reading.target.clone());
            }
            self.metrics.record_target(reading);
            self.health.mark_sampled();
            self.charge_reading(reading, received);
        }
        // Budgets are judged before anyone is answered: a crossing event's 2xx leaves only
        // after the kill order did.
        self.judge_budgets(received);
        for (range, refused, reply) in requests {
            let _ = reply.send(
                outcome
                    .as_ref()
                    .map(|fresh| EventsAnswer {
                        fresh: fresh.get(range).map(<[bool]>::to_vec).unwrap_or_default(),
                        refused,
                    })
                    .map_err(Clone::clone),
            );
        }
        for (range, duplicates, rejected, reply) in otlp_requests {
            let answer = outcome.as_ref().map_err(Clone::clone).map(|fresh| {
                let fresh = fresh.get(range).unwrap_or_default();
                let accepted = fresh.iter().filter(|new| **new).count();
                OtlpAnswer {
                    accepted,
                    duplicates: duplicates + fresh.len() - accepted,
                    rejected,
                }
            });
            let _ = reply.send(answer);
        }
        // Effects after answers: the status files of the runs this batch changed.
        if let Some(writer) = &self.status_files {
            self.stale_runs.retain(|run| !writer.mark(run));
        }
        self.compact_if_due();
        self.report_if_due(received);
    }

    /// Writes the weekly report when `[report] every` has passed (and once at start).
    fn report_if_due(&mut self, now: i64) {
        let Some(config) = self.report.clone() else {
            return;
        };
        if self
            .last_report
            .is_some_and(|at| at.elapsed() < config.every)
        {
            return;
        }
        self.last_report = Some(Instant::now());
        let week_ms = 7 * 86_400_000;
        let written = self
            .store
            .report(now - week_ms, now, self.budgets.status(now))
            .map_err(|e| e.to_string())
            .and_then(|report| {
                std::fs::create_dir_all(&config.dir).map_err(|e| e.to_string())?;
                let path = config.dir.join(crate::report::file_name(now));
                crate::files::write_atomic(&path, report.markdown().as_bytes())
                    .map_err(|e| e.to_string())?;
                Ok(path)
            });
        self.health
            .set_report(Some(written.as_ref().map(|_| now).map_err(Clone::clone)));
        match written {
            Ok(path) => {
                info!(path = %path.display(), "cost report written");
                self.metrics
                    .cost_report_last_success_timestamp_seconds
                    .get_or_create(&Vec::new())
                    .set(now as f64 / 1000.0);
            }
            Err(error) => {
                warn!(%error, dir = %config.dir.display(), "cost report not written; will retry at the next interval")
            }
        }
    }

    fn count_event(
        &mut self,
        source: &'static str,
        event_type: &'static str,
        result: &'static str,
    ) {
        self.count_events(source, event_type, result, 1);
    }

    fn count_events(
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
    fn usage_series(&mut self, agent: &str, model: &str) -> UsageSeries {
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
    fn apply(&mut self, priced: &PricedEvent, now: i64) {
        let metrics = self.metrics.clone();
        let m = &metrics;
        let event = &priced.event;
        let exemplar = event.trace_id.as_ref().map(|trace_id| TraceLabels {
            trace_id: trace_id.clone(),
        });
        self.count_event(priced.source, event.body.type_name(), "accepted");
        self.emit_span(event);
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
                series.usd.0.inc_by(cost, exemplar, None);
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

    /// Wires the enforcer, the webhook and the span exporter once they run.
    pub fn with_actions(
        mut self,
        enforcer: Option<std::sync::mpsc::Sender<EnforcerInput>>,
        webhook: Option<Webhook>,
        telemetry: Option<Telemetry>,
    ) -> Ledger {
        self.enforcer = enforcer;
        self.webhook = webhook;
        self.telemetry = telemetry;
        self
    }

    /// Builds and queues the span an ending event closes. Reads the run or task back from the
    /// store, which has just recorded both halves.
    fn emit_span(&mut self, event: &Event) {
        if self.telemetry.is_none() {
            return;
        }
        let record = match &event.body {
            EventBody::RunEnd { run_id, .. } => self.plan_span(run_id, event),
            EventBody::TaskEnd { task_id, .. } => self.task_span(task_id, event),
            EventBody::FileWrite {
                task_id,
                bytes,
                path_hash,
            } => self.file_write_span(task_id.as_deref(), *bytes, path_hash.as_deref(), event),
            _ => None,
        };
        match (record, &self.telemetry) {
            (Some(record), Some(telemetry)) => telemetry.record(record),
            (None, Some(_))
                if matches!(
                    event.body,
                    EventBody::RunEnd { .. } | EventBody::TaskEnd { .. }
                ) =>
            {
                warn!(
                    event = event.body.type_name(),
                    "no span built: its run or task could not be read back"
                );
            }
            _ => {}
        }
    }

    fn transitions_between(&self, start: i64, end: i64) -> Vec<(String, i64, Vec<KeyValue>)> {
        self.recent_transitions
            .iter()
            .filter(|(at, ..)| *at >= start && *at <= end)
            .map(|(at, name, budget, resource)| {
                let attributes = vec![
                    KeyValue::new("budget", budget.clone()),
                    KeyValue::new("resource", resource.clone()),
                ];
                (name.clone(), *at, attributes)
            })
            .collect()
    }

    fn run_trace(&self, run_id: &str) -> [u8; 16] {
        self.store
            .run_trace_id(run_id)
            .ok()
            .flatten()
            .and_then(|t| hex_bytes::<16>(&t))
            .unwrap_or_else(|| derived_trace_id("run", run_id))
    }

    fn plan_span(&self, run_id: &str, event: &Event) -> Option<SpanRecord> {
        let run = self.store.run(run_id).ok().flatten()?.run;
        let start = parse_ms(run.started.as_deref()).unwrap_or(event.ts_ms);
        let mut attributes = vec![
            KeyValue::new("run.id", run.id.clone()),
            KeyValue::new("result", run.status.clone()),
        ];
        let optional = [
            ("agent", &run.agent),
            ("run.name", &run.name),
            ("failure_class", &run.failure_class),
            ("error_summary", &run.error_summary),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value.clone()));
            }
        }
        let usd = run.usage.iter().fold(0.0, |sum, u| sum + u.usd);
        let tokens: u64 = run.usage.iter().map(|u| u.tokens).sum();
        attributes.push(KeyValue::new("cost.usd", usd));
        attributes.push(KeyValue::new(
            "cost.tokens",
            i64::try_from(tokens).unwrap_or(i64::MAX),
        ));
        Some(SpanRecord {
            name: "plan",
            trace_id: run
                .trace_id
                .as_deref()
                .and_then(hex_bytes::<16>)
                .unwrap_or_else(|| derived_trace_id("run", run_id)),
            span_id: derived_span_id("run", run_id),
            parent: run.parent_span_id.as_deref().and_then(hex_bytes::<8>),
            parent_remote: run.parent_span_id.is_some(),
            start_ms: start,
            end_ms: event.ts_ms,
            events: self.transitions_between(start, event.ts_ms),
            failed: run.status != "success",
            attributes,
        })
    }

    fn task_span(&self, task_id: &str, event: &Event) -> Option<SpanRecord> {
        let task = self.store.task(task_id).ok().flatten()?;
        let start = parse_ms(task.started.as_deref()).unwrap_or(event.ts_ms);
        let trace_id = task
            .cost_record
            .trace_id
            .as_deref()
            .and_then(hex_bytes::<16>)
            .or_else(|| task.run_id.as_deref().map(|run| self.run_trace(run)))
            .unwrap_or_else(|| derived_trace_id("task", task_id));
        let own_parent = task.parent_span_id.as_deref().and_then(hex_bytes::<8>);
        let (parent, parent_remote) = match (own_parent, &task.run_id) {
            (Some(span), _) => (Some(span), true),
            (None, Some(run)) => (Some(derived_span_id("run", run)), false),
            (None, None) => (None, false),
        };
        let record = &task.cost_record;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut attributes = vec![
            KeyValue::new("task.id", task.id.clone()),
            KeyValue::new("task.type", task.task_type.clone().unwrap_or_default()),
            KeyValue::new("result", task.status.clone()),
            KeyValue::new("cost_record.cpu_seconds", record.cpu_seconds),
            KeyValue::new("cost_record.disk_bytes", count(record.disk_bytes)),
            KeyValue::new("cost_record.mem_peak_bytes", count(record.mem_peak_bytes)),
            KeyValue::new("cost_record.tokens", count(record.tokens)),
            KeyValue::new("cost_record.usd", record.usd),
        ];
        let optional = [
            ("agent", &task.agent),
            ("failure_class", &task.failure_class),
            ("error_summary", &task.error_summary),
            ("run.id", &task.run_id),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value.clone()));
            }
        }
        Some(SpanRecord {
            name: "task",
            trace_id,
            span_id: derived_span_id("task", task_id),
            parent,
            parent_remote,
            start_ms: start,
            end_ms: event.ts_ms,
            events: self.transitions_between(start, event.ts_ms),
            failed: task.status != "success",
            attributes,
        })
    }

    fn file_write_span(
        &self,
        task_id: Option<&str>,
        bytes: u64,
        path_hash: Option<&str>,
        event: &Event,
    ) -> Option<SpanRecord> {
        // Only the task's ids: a file write must not cost a cost-record computation.
        let task = task_id.and_then(|id| self.store.task_trace(id).ok().flatten());
        let task_trace = task
            .as_ref()
            .and_then(|(trace, _)| trace.as_deref().and_then(hex_bytes::<16>));
        let run_trace = task
            .as_ref()
            .and_then(|(_, run)| run.as_deref())
            .map(|run| self.run_trace(run));
        let seed = format!(
            "{}:{}:{}",
            task_id.unwrap_or(""),
            event.ts_ms,
            event.event_id.as_deref().unwrap_or("")
        );
        let trace_id = event
            .trace_id
            .as_deref()
            .and_then(hex_bytes::<16>)
            .or(task_trace)
            .or(run_trace)
            .unwrap_or_else(|| derived_trace_id("file_write", &seed));
        let mut attributes = vec![KeyValue::new(
            "file.bytes",
            i64::try_from(bytes).unwrap_or(i64::MAX),
        )];
        if let Some(hash) = path_hash {
            attributes.push(KeyValue::new("file.path_sha256", hash.to_string()));
        }
        if let Some(task_id) = task_id {
            attributes.push(KeyValue::new("task.id", task_id.to_string()));
        }
        Some(SpanRecord {
            name: "file_write",
            trace_id,
            span_id: event
                .span_id
                .as_deref()
                .and_then(hex_bytes::<8>)
                .unwrap_or_else(|| derived_span_id("file_write", &seed)),
            parent: task_id.map(|id| derived_span_id("task", id)),
            parent_remote: false,
            start_ms: event.ts_ms,
            end_ms: event.ts_ms,
            events: Vec::new(),
            failed: false,
            attributes,
        })
    }

    /// Replays stored usage into the budgets and restores recorded states, so totals and
    /// states survive a restart and a transition that fired does not fire again.
    fn restore_budgets(&mut self) -> Result<(), LedgerError> {
        if self.budgets.is_empty() {
            return Ok(());
        }
        let now = now_ms();
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

    fn charge_reading(&mut self, reading: &TargetReading, now: i64) {
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

    /// Moves windows, announces transitions, orders kills, refreshes the budget series.
    fn judge_budgets(&mut self, now: i64) {
        if self.budgets.is_empty() {
            return;
        }
        let transitions = self.budgets.evaluate(now);
        let statuses = self.budgets.status(now);
        for transition in transitions {
            let spec = self.budgets.specs()[transition.budget].clone();
            let status = &statuses[transition.budget];
            let labels = BudgetLabels {
                budget: spec.name.clone(),
                resource: spec.resource.label().to_string(),
            };
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
                        self.health.set_budget_kill(&spec.name);
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
            if let Some(webhook) = &self.webhook {
                webhook.notify(json!({
                    "event": event,
                    "budget": spec.name,
                    "resource": spec.resource.label(),
                    "used": transition.used,
                    "limit": transition.limit,
                    "ratio": transition.used / transition.limit,
                    "window": status.window,
                    "window_start": status.window_start,
                    "window_end": status.window_end,
                    "on_exceed": spec.on_exceed,
                    "at": jiff::Timestamp::from_millisecond(now).map(|t| t.to_string()).unwrap_or_default(),
                }));
            }
            self.recent_transitions.push_back((
                now,
                event.to_string(),
                spec.name.clone(),
                spec.resource.label().to_string(),
            ));
            if self.recent_transitions.len() > MAX_RECENT_TRANSITIONS {
                self.recent_transitions.pop_front();
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
    }

    /// Exceeded is a state: every target an exceeded hard budget holds is stopped again
    /// whenever a reading shows it alive — a new session, a restarted agent, a late child —
    /// after a restart of costmeter too, since the state is rebuilt from the store.
    fn enforce_holds(&mut self, statuses: &[BudgetStatus]) {
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
            self.health.set_budget_kill(&hold.budget);
            self.order_kill(KillOrder {
                target: hold.target,
                reason: format!("budget '{}' exceeded", hold.budget),
            });
        }
    }

    /// The exceeded hard budgets that hold `target` now, read from the store at start: what
    /// `costmeter exec` checks before it starts its command.
    pub fn holding(&self, target: &str) -> Vec<BudgetStatus> {
        let me = [target.to_string()];
        self.budgets
            .status(now_ms())
            .into_iter()
            .filter(|s| {
                holds(std::slice::from_ref(s), &me)
                    .iter()
                    .any(|h| h.target == target)
            })
            .collect()
    }

    fn publish_budget_series(&self, statuses: &[BudgetStatus]) {
        let m = &self.metrics;
        for status in statuses {
            let labels = BudgetLabels {
                budget: status.name.clone(),
                resource: status.resource.label().to_string(),
            };
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

    fn order_kill(&mut self, order: KillOrder) {
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

    fn record_enforcement(&mut self, report: &KillReport, now: i64) {
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

    fn refused(
        &mut self,
        refusal: crate::health::Refusal,
        signal: Option<crate::otlp::Signal>,
        now: i64,
    ) -> Vec<crate::otlp::StateRow> {
        self.metrics
            .requests_refused_total
            .get_or_create(&crate::metrics::RefusedLabels {
                route: refusal.route,
                reason: refusal.reason,
            })
            .inc();
        warn!(route = refusal.route.label(), bytes = ?refusal.bytes, limit = refusal.limit, setting = refusal.setting, "request body over the limit refused: its sender drops it, and the usage in it is lost; raise {}", refusal.setting);
        self.health.record_refusal(refusal, now);
        signal.map(|s| self.otlp.release(s)).unwrap_or_default()
    }

    fn blocked(&mut self, route: crate::health::Route, reason: crate::health::RefusalReason) {
        let counter = self
            .metrics
            .requests_refused_total
            .get_or_create(&crate::metrics::RefusedLabels { route, reason });
        counter.inc();
        let count = counter.get();
        if count.is_power_of_two() {
            warn!(
                route = route.label(),
                reason = reason.label(),
                count,
                "request refused before its handler (web page, foreign Host or content type); logged at the 1st, 2nd, 4th, 8th… time"
            );
        }
    }

    fn pricing_status(&self) -> PricingStatus {
        let mut unknown: Vec<&UnknownModel> = self.unknown_models.values().collect();
        unknown.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.model.cmp(&b.model)));
        let unknown_models_omitted = unknown.len().saturating_sub(LISTED_UNKNOWN);
        let unknown: Vec<UnknownModel> =
            unknown.into_iter().take(LISTED_UNKNOWN).cloned().collect();
        PricingStatus {
            baseline_version: self.prices.baseline_version.clone(),
            baseline_taken: self.prices.baseline_taken.clone(),
            manifest: self
                .prices
                .manifest
                .as_ref()
                .map(|p| p.display().to_string()),
            models: self
                .prices
                .models_by_source
                .iter()
                .map(|(source, n)| (source.label(), *n))
                .collect(),
            rejected_rows: self.prices.rejected.clone(),
            unknown_models: unknown,
            unknown_models_omitted,
        }
    }

    fn compact_if_due(&mut self) {
        if self
            .last_compaction
            .is_some_and(|at| at.elapsed() < COMPACTION_EVERY)
        {
            return;
        }
        self.last_compaction = Some(Instant::now());
        let cutoff = now_ms() - i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        self.otlp.prune(cutoff);
        match self.store.compact(cutoff) {
            Ok(0) => {}
            Ok(rows) => info!(rows, "old rows folded into daily rollups"),
            Err(failure) => warn!(error = %failure, "compaction failed; will retry in an hour"),
        }
    }
}

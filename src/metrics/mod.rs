//! The metric taxonomy of DESIGN.md (the ADR-OS-019 names), registered once.
//!
//! Every series exists from start with its help text, even those whose sources are not wired
//! yet, so dashboards and alert rules can be written against a stable set of names. Labels with
//! values from outside (agent, model, target, …) pass through [`CardinalityCap`] first.

mod cardinality;
pub mod exposition;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::{CounterWithExemplar, HistogramWithExemplars};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

pub use cardinality::{CardinalityCap, OVERFLOW_VALUE};

use crate::sampler::TargetReading;

/// A USD counter carrying the trace of the event that last moved it. `prometheus-client` types
/// only the integer exemplar counter, so the float one is typed here.
#[derive(Debug, Default, Clone)]
pub struct UsdCounter(pub CounterWithExemplar<TraceLabels, f64, AtomicU64>);

impl TypedMetric for UsdCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for UsdCounter {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Registers a family so its `# HELP` and `# TYPE` lines appear even before its first sample:
/// dashboards and `promtool` see the whole taxonomy from the first scrape.
#[derive(Debug)]
struct Listed<M>(M);

impl<M: EncodeMetric> EncodeMetric for Listed<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }
    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
    fn is_empty(&self) -> bool {
        false
    }
}

/// A float counter (seconds, USD).
pub type FloatCounter = Counter<f64, AtomicU64>;
/// A float gauge (ratios, seconds, USD limits).
pub type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub r#type: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskTypeLabels {
    pub r#type: String,
}

/// The four additive token kinds of DESIGN.md's token accounting.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TokenKind {
    input,
    cache_read,
    cache_write,
    output,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub agent: String,
    pub model: String,
    pub kind: TokenKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpendLabels {
    pub agent: String,
    pub model: String,
}

/// A budget's series: `fleet` (the `[fleet] name` its totals are shared under) only on fleet
/// budgets, so a query can tell a fleet's total (the same on every sidecar: take the max) from
/// a sidecar's own (sum them).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct BudgetLabels {
    pub budget: String,
    pub resource: String,
    pub fleet: Option<String>,
}

impl EncodeLabelSet for BudgetLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        ("budget", self.budget.as_str()).encode(encoder.encode_label())?;
        ("resource", self.resource.as_str()).encode(encoder.encode_label())?;
        if let Some(fleet) = &self.fleet {
            ("fleet", fleet.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SoftKillLabels {
    pub target: String,
    pub signal: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub source: String,
    pub r#type: String,
    pub result: String,
}

/// A route whose requests can be refused before they are read. A closed set: a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EncodeLabelValue)]
#[allow(non_camel_case_types)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    events,
    otlp_traces,
    otlp_metrics,
    otlp_logs,
    otlp_grpc,
    alerts,
    reload,
    /// Any GET but the probes.
    read,
    other,
}

impl Route {
    pub fn label(self) -> &'static str {
        match self {
            Route::events => "events",
            Route::otlp_traces => "otlp_traces",
            Route::otlp_metrics => "otlp_metrics",
            Route::otlp_logs => "otlp_logs",
            Route::otlp_grpc => "otlp_grpc",
            Route::alerts => "alerts",
            Route::reload => "reload",
            Route::read => "read",
            Route::other => "other",
        }
    }
}

/// Why a request was refused before it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EncodeLabelValue)]
#[allow(non_camel_case_types)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    body_too_large,
    /// `Host` named neither an IP, `localhost` nor `[server] allowed_hosts`.
    foreign_host,
    /// `Origin` of another site: a web page.
    foreign_origin,
    /// A write whose body is not JSON, NDJSON or protobuf.
    content_type,
    /// An OTLP protobuf body with more items than one request may hold.
    too_many_items,
}

impl RefusalReason {
    pub fn label(self) -> &'static str {
        match self {
            RefusalReason::body_too_large => "body_too_large",
            RefusalReason::foreign_host => "foreign_host",
            RefusalReason::foreign_origin => "foreign_origin",
            RefusalReason::content_type => "content_type",
            RefusalReason::too_many_items => "too_many_items",
        }
    }
}

/// How a call through the proxy ended. A closed set: a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, EncodeLabelValue)]
#[allow(non_camel_case_types)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// A success status and the provider's usage read.
    ok,
    /// A success status but no usage in the answer (an endpoint without usage, or a format
    /// the proxy does not read): the call is not metered.
    unmetered,
    /// The provider answered an error status.
    error,
    /// The provider could not be reached (connect, TLS, timeout before the headers).
    unreachable,
    /// The answer broke off: the client went away, or the provider's stream failed.
    cut,
    /// A stream closed by the proxy at the output its budget left room for.
    limited,
    /// Refused before it reached the provider: a hard budget had no room for it.
    refused,
}

/// Calls through the proxy, by upstream (a configured name) and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    pub upstream: String,
    pub outcome: CallOutcome,
}

/// Why and where a request was refused before it was read; both closed sets.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub route: Route,
    pub reason: RefusalReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
}

/// How a usage event's USD was obtained: `pricing::Confidence`'s labels, a closed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfidenceLabels {
    pub confidence: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LabelLabels {
    pub label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

/// Exemplar labels: the trace of the event that last moved a series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TraceLabels {
    pub trace_id: String,
}

/// Task wall time buckets: from sub-second tool calls to hour-long builds.
const TASK_DURATION_BUCKETS: [f64; 14] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Lock wait buckets: from half a millisecond to ten seconds.
const LOCK_WAIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Every costmeter series. Fields are public: the ledger moves them, nothing else should.
pub struct Metrics {
    registry: Registry,
    pub cap: CardinalityCap,

    pub task_total: Family<TaskLabels, Counter>,
    pub task_duration_seconds: Family<TaskTypeLabels, HistogramWithExemplars<TraceLabels>>,
    pub registry_lock_wait_seconds: Histogram,
    pub tokens_total: Family<TokenLabels, CounterWithExemplar<TraceLabels>>,
    pub usd_spend_total: Family<SpendLabels, UsdCounter>,

    pub cpu_seconds_total: Family<TargetLabels, FloatCounter>,
    pub memory_rss_bytes: Family<TargetLabels, Gauge>,
    pub memory_peak_rss_bytes: Family<TargetLabels, Gauge>,
    pub disk_read_bytes_total: Family<TargetLabels, Counter>,
    pub disk_written_bytes_total: Family<TargetLabels, Counter>,
    pub target_processes: Family<TargetLabels, Gauge>,
    pub target_up: Family<TargetLabels, Gauge>,
    /// Seconds a target has been busy with no usage arriving (silent telemetry), else 0.
    pub target_silent_seconds: Family<TargetLabels, FloatGauge>,

    pub budget_limit: Family<BudgetLabels, FloatGauge>,
    pub budget_used: Family<BudgetLabels, FloatGauge>,
    pub budget_utilization_ratio: Family<BudgetLabels, FloatGauge>,
    pub budget_state: Family<BudgetLabels, Gauge>,
    pub budget_window_end_timestamp_seconds: Family<BudgetLabels, FloatGauge>,
    pub budget_projected_exhaustion_seconds: Family<BudgetLabels, FloatGauge>,
    pub budget_warnings_total: Family<BudgetLabels, Counter>,
    pub budget_exceeded_total: Family<BudgetLabels, Counter>,
    pub soft_kills_total: Family<SoftKillLabels, Counter>,

    pub events_total: Family<EventLabels, Counter>,
    pub requests_refused_total: Family<RefusedLabels, Counter>,
    pub proxy_calls_total: Family<ProxyLabels, Counter>,
    pub unknown_model_events_total: Family<ModelLabels, Counter>,
    pub cost_events_total: Family<ConfidenceLabels, Counter>,
    pub cost_usd_total: Family<ConfidenceLabels, FloatCounter>,
    pub unknown_model_tokens_total: Family<ModelLabels, Counter>,
    pub pricing_models: Family<SourceLabels, Gauge>,
    pub pricing_rejected_rows: Family<SourceLabels, Gauge>,
    /// Unlabelled, but a family so it stays absent until the first report is written.
    pub cost_report_last_success_timestamp_seconds: Family<Vec<(String, String)>, FloatGauge>,
    pub build_info: Family<VersionLabels, Gauge>,
    /// Fleet budgets: whether Redis answered the last push (1) or not (0), and the usage
    /// events acknowledged here that Redis has not counted yet. Absent without `[fleet]
    /// redis_url`.
    pub fleet_up: Family<Vec<(String, String)>, Gauge>,
    pub fleet_backlog_events: Family<Vec<(String, String)>, Gauge>,
}

impl Metrics {
    /// Counts a request refused before its handler (the cross-site guard, a content type, an
    /// item count); returns the count so far. An atomic, on the request's task: a flood of
    /// refused requests never queues in the ledger's inbox beside real events.
    pub fn count_refused(&self, route: Route, reason: RefusalReason) -> u64 {
        let counter = self
            .requests_refused_total
            .get_or_create(&RefusedLabels { route, reason });
        counter.inc();
        counter.get()
    }

    /// (target, up, CPU seconds, RSS bytes) of each of `targets`, read from the series, not
    /// from a rendered exposition.
    pub fn target_figures(&self, targets: &[String]) -> Vec<(String, f64, f64, f64)> {
        targets
            .iter()
            .map(|target| {
                let labels = TargetLabels {
                    target: target.clone(),
                };
                (
                    target.clone(),
                    self.target_up.get_or_create(&labels).get() as f64,
                    self.cpu_seconds_total.get_or_create(&labels).get(),
                    self.memory_rss_bytes.get_or_create(&labels).get() as f64,
                )
            })
            .collect()
    }

    /// Counts events refused before they reached the ledger (bad JSON, failed validation),
    /// by their type label, on the request's own task: a flood of bad bodies never queues in
    /// the ledger's inbox.
    pub fn count_rejected(&self, source: &str, types: &[&'static str]) {
        for event_type in types {
            self.events_total
                .get_or_create(&EventLabels {
                    source: source.to_string(),
                    r#type: (*event_type).to_string(),
                    result: "rejected".to_string(),
                })
                .inc();
        }
    }

    /// What `doctor` warns about that the metrics know: targets not found, label values
    /// folded, agents that reported usage. (Unpriced models come from the price table.)
    pub fn attention(&self, targets: &[String]) -> crate::wire::Attention {
        crate::wire::Attention {
            targets_down: targets
                .iter()
                .filter(|target| {
                    self.target_up
                        .get_or_create(&TargetLabels {
                            target: (*target).clone(),
                        })
                        .get()
                        == 0
                })
                .cloned()
                .collect(),
            silent_targets: targets
                .iter()
                .filter(|target| {
                    self.target_silent_seconds
                        .get(&TargetLabels {
                            target: (*target).clone(),
                        })
                        .is_some_and(|g| g.get() > 0.0)
                })
                .cloned()
                .collect(),
            unpriced_models: Vec::new(),
            folded_labels: self
                .cap
                .folded()
                .into_iter()
                .map(|(label, count)| crate::wire::Tally {
                    name: label.to_string(),
                    count,
                })
                .collect(),
            agents_seen: self.cap.usage_agents(),
        }
    }

    /// Registers the whole taxonomy under `namespace` (`haios` by default).
    pub fn new(namespace: &str, max_label_values: usize, max_series: usize) -> Metrics {
        let mut registry = Registry::with_prefix(namespace);
        let label_values_overflow_total = Family::<LabelLabels, Counter>::default();
        let cap = CardinalityCap::new(
            max_label_values,
            max_series,
            label_values_overflow_total.clone(),
        );
        let metrics = Metrics {
            cap,
            task_total: Family::default(),
            task_duration_seconds: Family::new_with_constructor(|| {
                HistogramWithExemplars::new(TASK_DURATION_BUCKETS.into_iter())
            }),
            registry_lock_wait_seconds: Histogram::new(LOCK_WAIT_BUCKETS),
            tokens_total: Family::default(),
            usd_spend_total: Family::default(),
            cpu_seconds_total: Family::default(),
            memory_rss_bytes: Family::default(),
            memory_peak_rss_bytes: Family::default(),
            disk_read_bytes_total: Family::default(),
            disk_written_bytes_total: Family::default(),
            target_processes: Family::default(),
            target_up: Family::default(),
            target_silent_seconds: Family::default(),
            budget_limit: Family::default(),
            budget_used: Family::default(),
            budget_utilization_ratio: Family::default(),
            budget_state: Family::default(),
            budget_window_end_timestamp_seconds: Family::default(),
            budget_projected_exhaustion_seconds: Family::default(),
            budget_warnings_total: Family::default(),
            budget_exceeded_total: Family::default(),
            soft_kills_total: Family::default(),
            events_total: Family::default(),
            requests_refused_total: Family::default(),
            proxy_calls_total: Family::default(),
            unknown_model_events_total: Family::default(),
            cost_events_total: Family::default(),
            cost_usd_total: Family::default(),
            unknown_model_tokens_total: Family::default(),
            pricing_models: Family::default(),
            pricing_rejected_rows: Family::default(),
            cost_report_last_success_timestamp_seconds: Family::default(),
            build_info: Family::default(),
            fleet_up: Family::default(),
            fleet_backlog_events: Family::default(),
            registry: Registry::default(),
        };
        let m = &metrics;
        let r = &mut registry;
        r.register(
            "task",
            "Finished tasks by type and result (ADR 19-O2)",
            Listed(m.task_total.clone()),
        );
        r.register_with_unit(
            "task_duration",
            "Task wall time (ADR 19-O2)",
            Unit::Seconds,
            Listed(m.task_duration_seconds.clone()),
        );
        r.register_with_unit(
            "registry_lock_wait",
            "Lock waits reported by lock_wait events (ADR 19-O2)",
            Unit::Seconds,
            Listed(m.registry_lock_wait_seconds.clone()),
        );
        r.register("tokens", "LLM tokens by kind; the kinds input, cache_read, cache_write and output are additive (ADR 19-O2)", Listed(m.tokens_total.clone()));
        r.register(
            "usd_spend",
            "USD spent on LLM usage (ADR 19-O2)",
            Listed(m.usd_spend_total.clone()),
        );
        r.register_with_unit(
            "cpu",
            "User and system CPU of the target's process tree, reaped children included",
            Unit::Seconds,
            Listed(m.cpu_seconds_total.clone()),
        );
        r.register_with_unit(
            "memory_rss",
            "Resident memory of the target's process tree now",
            Unit::Bytes,
            Listed(m.memory_rss_bytes.clone()),
        );
        r.register_with_unit(
            "memory_peak_rss",
            "Highest tree resident memory seen",
            Unit::Bytes,
            Listed(m.memory_peak_rss_bytes.clone()),
        );
        r.register_with_unit(
            "disk_read",
            "Bytes the target's process tree read from storage",
            Unit::Bytes,
            Listed(m.disk_read_bytes_total.clone()),
        );
        r.register_with_unit(
            "disk_written",
            "Bytes the target's process tree wrote to storage",
            Unit::Bytes,
            Listed(m.disk_written_bytes_total.clone()),
        );
        r.register(
            "target_processes",
            "Processes in the target's tree now",
            Listed(m.target_processes.clone()),
        );
        r.register(
            "target_up",
            "1 while the target is found, else 0",
            Listed(m.target_up.clone()),
        );
        r.register(
            "target_silent_seconds",
            "Seconds the target has kept busy while no usage arrived from any source, once past its silent_after (telemetry lost on the way); else 0",
            Listed(m.target_silent_seconds.clone()),
        );
        r.register(
            "budget_limit",
            "Configured budget limit in the resource's base unit",
            Listed(m.budget_limit.clone()),
        );
        r.register(
            "budget_used",
            "Running total of the budget's current window",
            Listed(m.budget_used.clone()),
        );
        r.register(
            "budget_utilization_ratio",
            "Budget used divided by its limit",
            Listed(m.budget_utilization_ratio.clone()),
        );
        r.register(
            "budget_state",
            "Budget state: 0 ok, 1 warning, 2 exceeded",
            Listed(m.budget_state.clone()),
        );
        r.register(
            "budget_window_end_timestamp_seconds",
            "Unix time when the budget's current window resets (absent for lifetime budgets)",
            Listed(m.budget_window_end_timestamp_seconds.clone()),
        );
        r.register("budget_projected_exhaustion_seconds", "Seconds until the limit at the recent burn rate, present only when that falls before the window ends", Listed(m.budget_projected_exhaustion_seconds.clone()));
        r.register(
            "budget_warnings",
            "Budget transitions into the warning state",
            Listed(m.budget_warnings_total.clone()),
        );
        r.register(
            "budget_exceeded",
            "Budget transitions into the exceeded state",
            Listed(m.budget_exceeded_total.clone()),
        );
        r.register(
            "soft_kills",
            "Signals sent by budget enforcement",
            Listed(m.soft_kills_total.clone()),
        );
        r.register(
            "events",
            "Ingested events by source, type and result (accepted, duplicate, rejected)",
            Listed(m.events_total.clone()),
        );
        r.register(
            "requests_refused",
            "Requests refused before their body was read, by route and reason; a refused OTLP batch is dropped by its exporter, so its usage is missing",
            Listed(m.requests_refused_total.clone()),
        );
        r.register(
            "fleet_up",
            "Whether the fleet's Redis answered the last push (1) or not (0): fleet budgets are degraded while 0",
            m.fleet_up.clone(),
        );
        r.register(
            "fleet_backlog_events",
            "Usage events acknowledged here that the fleet's Redis has not counted yet (pushed exactly once when it answers)",
            m.fleet_backlog_events.clone(),
        );
        r.register(
            "proxy_calls",
            "Calls forwarded by the LLM API proxy, by upstream and outcome (ok, unmetered, error, unreachable, cut, limited, refused)",
            m.proxy_calls_total.clone(),
        );
        r.register(
            "cost_events",
            "Usage events by how their USD was obtained: exact (reported by the provider or agent), priced (from the table), cache_price_fallback, estimated (a cut stream's or a library's estimate), unknown_model (priced at 0)",
            m.cost_events_total.clone(),
        );
        r.register(
            "cost_usd",
            "USD by how it was obtained (the same confidence as cost_events); sums to usd_spend",
            m.cost_usd_total.clone(),
        );
        r.register(
            "unknown_model_events",
            "Usage events priced at 0 for want of a price for their model",
            Listed(m.unknown_model_events_total.clone()),
        );
        r.register(
            "unknown_model_tokens",
            "Tokens priced at 0 for want of a price for their model",
            Listed(m.unknown_model_tokens_total.clone()),
        );
        r.register(
            "pricing_models",
            "Models in the price table by source (embedded baseline, manifest)",
            Listed(m.pricing_models.clone()),
        );
        r.register(
            "pricing_rejected_rows",
            "Price table rows rejected by source",
            Listed(m.pricing_rejected_rows.clone()),
        );
        r.register(
            "cost_report_last_success_timestamp_seconds",
            "Unix time the last weekly cost report was written (ADR 19-O5)",
            Listed(m.cost_report_last_success_timestamp_seconds.clone()),
        );
        r.register(
            "label_values_overflow",
            "Label values folded into __other__ by the cardinality cap",
            Listed(label_values_overflow_total),
        );
        r.register(
            "build_info",
            "Always 1; the version label says which costmeter is running",
            Listed(m.build_info.clone()),
        );
        m.build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Applies one sampler reading to the target series.
    pub fn record_target(&self, reading: &TargetReading) {
        let labels = self.add_target_usage(
            &reading.target,
            reading.cpu_seconds,
            reading.read_bytes,
            reading.written_bytes,
            reading.peak_rss_bytes,
        );
        self.memory_rss_bytes
            .get_or_create(&labels)
            .set(saturating_i64(reading.rss_bytes));
        self.target_processes
            .get_or_create(&labels)
            .set(saturating_i64(reading.processes));
        self.target_up
            .get_or_create(&labels)
            .set(i64::from(reading.up));
    }

    /// Adds usage to a target's counters and raises its peak (never lowers it: after a
    /// restart the stored peak may be above what the sampler has seen since).
    pub fn add_target_usage(
        &self,
        target: &str,
        cpu_seconds: f64,
        read_bytes: u64,
        written_bytes: u64,
        peak_rss_bytes: u64,
    ) -> TargetLabels {
        let labels = TargetLabels {
            target: self.cap.admit("target", target),
        };
        self.cpu_seconds_total
            .get_or_create(&labels)
            .inc_by(cpu_seconds);
        self.disk_read_bytes_total
            .get_or_create(&labels)
            .inc_by(read_bytes);
        self.disk_written_bytes_total
            .get_or_create(&labels)
            .inc_by(written_bytes);
        let peak = self.memory_peak_rss_bytes.get_or_create(&labels);
        peak.set(peak.get().max(saturating_i64(peak_rss_bytes)));
        labels
    }

    /// Removes a target's gauges after it was dropped from the config. Counters stay, as
    /// Prometheus expects of counters within one process lifetime.
    pub fn forget_target(&self, target: &str) {
        let labels = TargetLabels {
            target: target.to_string(),
        };
        self.memory_rss_bytes.remove(&labels);
        self.memory_peak_rss_bytes.remove(&labels);
        self.target_processes.remove(&labels);
        self.target_up.remove(&labels);
        self.target_silent_seconds.remove(&labels);
    }

    /// The registry, for encoding.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_requests_are_counted_by_route_and_reason() {
        let metrics = Metrics::new("haios", 10, 10);
        for expected in 1..=3 {
            assert_eq!(
                metrics.count_refused(Route::alerts, RefusalReason::foreign_origin),
                expected
            );
        }
        assert_eq!(
            metrics.count_refused(Route::events, RefusalReason::foreign_origin),
            1,
            "each route has its own series"
        );
    }
}

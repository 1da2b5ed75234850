//! From OTLP spans, metric points and log records to usage observations.
//!
//! Every convention costmeter reads is listed here and in README's OTLP table: the GenAI
//! semantic conventions (span attributes and the `gen_ai.client.token.usage` histogram), the
//! older `llm.usage.*` span attributes, and Claude Code's and Gemini CLI's own metrics and log
//! events. Everything else in a request is ignored; nothing of a prompt or completion is read.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric, number_data_point};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::ingest::Event;
use crate::ingest::event;

/// Which signal and convention a usage figure came from. One family meters an owner (an agent
/// instance) at a time, so a usage reported twice — as spans and as a histogram, as metrics and
/// as log events — is counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Spans,
    GenAiMetric,
    ClaudeCodeMetrics,
    ClaudeCodeLogs,
    GeminiCliMetrics,
    GeminiCliLogs,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Spans,
        Family::GenAiMetric,
        Family::ClaudeCodeMetrics,
        Family::ClaudeCodeLogs,
        Family::GeminiCliMetrics,
        Family::GeminiCliLogs,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Family::Spans => "gen_ai_spans",
            Family::GenAiMetric => "gen_ai_metric",
            Family::ClaudeCodeMetrics => "claude_code_metrics",
            Family::ClaudeCodeLogs => "claude_code_logs",
            Family::GeminiCliMetrics => "gemini_cli_metrics",
            Family::GeminiCliLogs => "gemini_cli_logs",
        }
    }

    pub fn from_label(label: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.label() == label)
    }

    /// The OTLP signal that carries this family.
    pub fn signal(self) -> super::Signal {
        match self {
            Family::Spans => super::Signal::Traces,
            Family::GenAiMetric | Family::ClaudeCodeMetrics | Family::GeminiCliMetrics => {
                super::Signal::Metrics
            }
            Family::ClaudeCodeLogs | Family::GeminiCliLogs => super::Signal::Logs,
        }
    }
}

/// A part of an `llm_usage` event a metric point's value adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// All input, cached included.
    Input,
    CacheRead,
    CacheWrite,
    Output,
    Reasoning,
    Usd,
}

/// Whose usage it is and how it is labelled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageLabels {
    pub agent: String,
    pub model: String,
    pub provider: Option<String>,
}

/// A whole usage record: a span or a log event.
#[derive(Debug, Clone)]
pub struct Record {
    pub owner: String,
    pub family: Family,
    pub event: Event,
}

/// One number of a metric stream, before cumulative values become deltas.
#[derive(Debug, Clone)]
pub struct Point {
    pub owner: String,
    pub family: Family,
    /// Identity of the stream: resource, scope, metric name and point attributes.
    pub stream: String,
    pub start_ns: u64,
    pub time_ns: u64,
    pub cumulative: bool,
    pub value: f64,
    pub parts: &'static [Part],
    pub labels: UsageLabels,
}

/// What one request holds, mapped.
#[derive(Debug, Default)]
pub struct Mapped {
    pub records: Vec<Record>,
    pub points: Vec<Point>,
    /// Items that carried usage but could not be read, each with why.
    pub rejected: Vec<String>,
}

/// Attributes of an item and of its resource; the item's win.
struct Attributes<'a> {
    item: &'a [KeyValue],
    resource: &'a [KeyValue],
}

impl<'a> Attributes<'a> {
    fn get(&self, key: &str) -> Option<&'a any_value::Value> {
        self.item
            .iter()
            .chain(self.resource)
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            any_value::Value::StringValue(s) if !s.trim().is_empty() => Some(s.clone()),
            any_value::Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        }
    }

    fn first_string(&self, keys: &[&str]) -> Option<String> {
        keys.iter().find_map(|k| self.string(k))
    }

    /// A number given as an int, a double or a numeric string (Claude Code sends strings).
    fn number(&self, key: &str) -> Option<Value> {
        match self.get(key)? {
            any_value::Value::IntValue(i) => Some(json!(i)),
            // NaN and infinities stay visible (as text) so the validator refuses them by name
            // instead of reading a missing count as 0.
            any_value::Value::DoubleValue(d) => Some(
                serde_json::Number::from_f64(*d)
                    .map_or_else(|| Value::String(d.to_string()), Value::Number),
            ),
            any_value::Value::StringValue(s) => {
                let s = s.trim();
                if let Ok(i) = s.parse::<i64>() {
                    Some(json!(i))
                } else if let Ok(d) = s.parse::<f64>() {
                    serde_json::Number::from_f64(d)
                        .map(Value::Number)
                        .or_else(|| Some(Value::String(s.to_string())))
                } else {
                    Some(Value::String(s.to_string()))
                }
            }
            _ => Some(Value::String("a non-numeric value".to_string())),
        }
    }

    fn first_number(&self, keys: &[&str]) -> Option<Value> {
        keys.iter().find_map(|k| self.number(k))
    }
}

const INPUT_KEYS: [&str; 3] = [
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
];
const OUTPUT_KEYS: [&str; 3] = [
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
];
const CACHE_READ_KEYS: [&str; 2] = [
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
];
const CACHE_WRITE_KEYS: [&str; 2] = [
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
];
const REASONING_KEYS: [&str; 2] = [
    "gen_ai.usage.reasoning.output_tokens",
    "gen_ai.usage.reasoning_tokens",
];
const MODEL_KEYS: &[&str] = &[
    "gen_ai.response.model",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.request.model",
];
const PROVIDER_KEYS: &[&str] = &["gen_ai.provider.name", "gen_ai.system", "llm.system"];

/// Model label when a usage names none: priced at 0 and shown as an unknown model.
pub const UNKNOWN_MODEL: &str = "unknown";

/// How usage is attributed when the telemetry names no agent.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub agent: String,
}

impl Attributes<'_> {
    fn agent(&self, defaults: &Defaults) -> String {
        self.string("gen_ai.agent.name")
            .or_else(|| {
                self.string("service.name")
                    .filter(|s| !s.starts_with("unknown_service"))
            })
            .unwrap_or_else(|| defaults.agent.clone())
    }

    /// The agent instance whose usage this is: one family of signals meters it at a time.
    fn owner(&self) -> String {
        let part = |k: &str| self.string(k).unwrap_or_default();
        format!(
            "{}|{}|{}",
            part("service.name"),
            part("service.instance.id"),
            part("session.id")
        )
    }

    fn labels(&self, defaults: &Defaults, model_keys: &[&str]) -> UsageLabels {
        UsageLabels {
            agent: self.agent(defaults),
            model: self
                .first_string(model_keys)
                .unwrap_or_else(|| UNKNOWN_MODEL.to_string()),
            provider: self.first_string(PROVIDER_KEYS),
        }
    }
}

fn hex(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty() && bytes.iter().any(|b| *b != 0)).then(|| {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    })
}

fn rfc3339(ns: u64) -> Option<String> {
    let ns = i128::from(ns);
    (ns > 0)
        .then(|| jiff::Timestamp::from_nanosecond(ns).ok())
        .flatten()
        .map(|t| t.to_string())
}

/// A stable digest of attributes and extra text, for stream and event identities.
fn digest(parts: &[&[KeyValue]], extra: &str) -> String {
    let mut hasher = Sha256::new();
    for attributes in parts {
        let sorted: BTreeMap<&str, String> = attributes
            .iter()
            .map(|kv| (kv.key.as_str(), format!("{:?}", kv.value)))
            .collect();
        for (k, v) in sorted {
            hasher.update(k.as_bytes());
            hasher.update([0]);
            hasher.update(v.as_bytes());
            hasher.update([1]);
        }
        hasher.update([2]);
    }
    hasher.update(extra.as_bytes());
    let digest = hasher.finalize();
    digest[..16].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Turns one mapped usage object into an event, or says why not.
fn checked(object: Value, origin: &str, now_ms: i64) -> Result<Event, String> {
    event::validate(&object, now_ms).map_err(|problem| format!("{origin}: {problem}"))
}

/// Spans carrying GenAI (or older `llm.usage.*`) token attributes become usage events; the
/// span id is the idempotency key, so a resent span counts once.
pub fn spans(request: &ExportTraceServiceRequest, defaults: &Defaults, now_ms: i64) -> Mapped {
    let mut mapped = Mapped::default();
    let empty = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map_or(&empty, |r| &r.attributes);
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let attributes = Attributes {
                    item: &span.attributes,
                    resource,
                };
                let input = attributes.first_number(&INPUT_KEYS);
                let output = attributes.first_number(&OUTPUT_KEYS);
                if input.is_none() && output.is_none() {
                    continue;
                }
                let trace_id = hex(&span.trace_id);
                let span_id = hex(&span.span_id);
                let origin = format!(
                    "span {} ('{}')",
                    span_id.as_deref().unwrap_or("without id"),
                    span.name.chars().take(64).collect::<String>()
                );
                let labels = attributes.labels(defaults, MODEL_KEYS);
                let mut object = json!({
                    "type": "llm_usage",
                    "agent": labels.agent,
                    "model": labels.model,
                    "input_tokens": input.unwrap_or(json!(0)),
                    "output_tokens": output.unwrap_or(json!(0)),
                });
                let fields = [
                    ("provider", labels.provider.map(Value::String)),
                    (
                        "cache_read_tokens",
                        attributes.first_number(&CACHE_READ_KEYS),
                    ),
                    (
                        "cache_write_tokens",
                        attributes.first_number(&CACHE_WRITE_KEYS),
                    ),
                    ("reasoning_tokens", attributes.first_number(&REASONING_KEYS)),
                    ("trace_id", trace_id.clone().map(Value::String)),
                    ("span_id", span_id.clone().map(Value::String)),
                    (
                        "ts",
                        rfc3339(span.end_time_unix_nano)
                            .or_else(|| rfc3339(span.start_time_unix_nano))
                            .map(Value::String),
                    ),
                    (
                        "event_id",
                        Some(Value::String(match (&trace_id, &span_id) {
                            (Some(t), Some(s)) => format!("otlp-span-{t}-{s}"),
                            // No ids: the span's content is its identity, so a resend of
                            // the same span still counts once.
                            _ => format!(
                                "otlp-span-{}",
                                digest(
                                    &[resource, &span.attributes],
                                    &format!(
                                        "{}:{}:{}",
                                        span.name,
                                        span.start_time_unix_nano,
                                        span.end_time_unix_nano
                                    )
                                )
                            ),
                        })),
                    ),
                ];
                for (key, value) in fields {
                    if let Some(value) = value {
                        object[key] = value;
                    }
                }
                match checked(object, &origin, now_ms) {
                    Ok(event) => mapped.records.push(Record {
                        owner: attributes.owner(),
                        family: Family::Spans,
                        event,
                    }),
                    Err(problem) => mapped.rejected.push(problem),
                }
            }
        }
    }
    mapped
}

/// Which usage a metric carries, by its name; `None` for every other metric.
fn metric_family(name: &str) -> Option<Family> {
    match name {
        "gen_ai.client.token.usage" => Some(Family::GenAiMetric),
        "claude_code.token.usage" | "claude_code.cost.usage" => Some(Family::ClaudeCodeMetrics),
        "gemini_cli.token.usage" => Some(Family::GeminiCliMetrics),
        _ => None,
    }
}

/// What a point adds to, from its metric and its token-type attribute.
fn parts_of(metric: &str, token_type: Option<&str>) -> Option<&'static [Part]> {
    use Part::*;
    if metric == "claude_code.cost.usage" {
        return Some(&[Usd]);
    }
    Some(match (metric, token_type?) {
        ("gen_ai.client.token.usage", "input" | "prompt") => &[Input],
        ("gen_ai.client.token.usage", "output" | "completion") => &[Output],
        // Claude Code counts input without the cache, as the Anthropic API does; costmeter's
        // input includes it.
        ("claude_code.token.usage", "input") => &[Input],
        ("claude_code.token.usage", "output") => &[Output],
        ("claude_code.token.usage", "cacheRead") => &[Input, CacheRead],
        ("claude_code.token.usage", "cacheCreation") => &[Input, CacheWrite],
        // Gemini's prompt count includes cached content; thoughts and tool-use prompts are
        // counted apart from it and billed as output and input.
        ("gemini_cli.token.usage", "input") => &[Input],
        ("gemini_cli.token.usage", "output") => &[Output],
        ("gemini_cli.token.usage", "thought") => &[Output, Reasoning],
        ("gemini_cli.token.usage", "cache") => &[CacheRead],
        ("gemini_cli.token.usage", "tool") => &[Input],
        _ => return None,
    })
}

/// A metric point before mapping: attributes, start, time, value or why none, cumulative.
type Raw<'p> = (&'p [KeyValue], u64, u64, Result<f64, String>, bool);

/// A histogram point's tokens are its sum.
fn histogram_point(
    attributes: &[KeyValue],
    (start_ns, time_ns): (u64, u64),
    sum: Option<f64>,
    cumulative: bool,
) -> Raw<'_> {
    (
        attributes,
        start_ns,
        time_ns,
        sum.ok_or_else(|| "histogram point has no sum".to_string()),
        cumulative,
    )
}

/// Token and cost metric points, per stream; cumulative ones become deltas in the ledger.
pub fn metrics(request: &ExportMetricsServiceRequest, defaults: &Defaults) -> Mapped {
    let mut mapped = Mapped::default();
    let empty = Vec::new();
    let cumulative = AggregationTemporality::Cumulative as i32;
    for resource_metrics in &request.resource_metrics {
        let resource = resource_metrics
            .resource
            .as_ref()
            .map_or(&empty, |r| &r.attributes);
        for scope_metrics in &resource_metrics.scope_metrics {
            let scope = scope_metrics.scope.as_ref().map_or("", |s| s.name.as_str());
            for metric in &scope_metrics.metrics {
                let Some(family) = metric_family(&metric.name) else {
                    continue;
                };
                let raw: Vec<Raw<'_>> = match &metric.data {
                    Some(metric::Data::Sum(sum)) => sum
                        .data_points
                        .iter()
                        .map(|p| {
                            let value = match p.value {
                                Some(number_data_point::Value::AsInt(i)) => Ok(i as f64),
                                Some(number_data_point::Value::AsDouble(d)) => Ok(d),
                                None => Err("point has no value".to_string()),
                            };
                            (
                                &p.attributes[..],
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                value,
                                sum.aggregation_temporality == cumulative,
                            )
                        })
                        .collect(),
                    Some(metric::Data::Histogram(histogram)) => histogram
                        .data_points
                        .iter()
                        .map(|p| {
                            histogram_point(
                                &p.attributes,
                                (p.start_time_unix_nano, p.time_unix_nano),
                                p.sum,
                                histogram.aggregation_temporality == cumulative,
                            )
                        })
                        .collect(),
                    Some(metric::Data::ExponentialHistogram(histogram)) => histogram
                        .data_points
                        .iter()
                        .map(|p| {
                            histogram_point(
                                &p.attributes,
                                (p.start_time_unix_nano, p.time_unix_nano),
                                p.sum,
                                histogram.aggregation_temporality == cumulative,
                            )
                        })
                        .collect(),
                    _ => {
                        mapped.rejected.push(format!(
                            "metric '{}': expected a sum or histogram, as its convention defines",
                            metric.name
                        ));
                        continue;
                    }
                };
                for (index, (attributes_list, start_ns, time_ns, value, is_cumulative)) in
                    raw.into_iter().enumerate()
                {
                    let origin = format!("metric '{}' point {index}", metric.name);
                    let attributes = Attributes {
                        item: attributes_list,
                        resource,
                    };
                    let token_type = attributes
                        .string("gen_ai.token.type")
                        .or_else(|| attributes.string("type"));
                    let Some(parts) = parts_of(&metric.name, token_type.as_deref()) else {
                        mapped.rejected.push(format!(
                            "{origin}: token type '{}' is not one costmeter knows for this metric",
                            token_type.as_deref().unwrap_or("(none)")
                        ));
                        continue;
                    };
                    let value = match value {
                        Ok(v) if v.is_finite() && v >= 0.0 => v,
                        Ok(v) => {
                            mapped.rejected.push(format!(
                                "{origin}: value must be a finite number ≥ 0, got {v}"
                            ));
                            continue;
                        }
                        Err(problem) => {
                            mapped.rejected.push(format!("{origin}: {problem}"));
                            continue;
                        }
                    };
                    let model_keys: &[&str] = match family {
                        Family::GenAiMetric => MODEL_KEYS,
                        _ => &["model"],
                    };
                    mapped.points.push(Point {
                        owner: attributes.owner(),
                        family,
                        stream: digest(
                            &[resource, attributes_list],
                            &format!("{scope}\u{0}{}", metric.name),
                        ),
                        start_ns,
                        time_ns,
                        cumulative: is_cumulative,
                        value,
                        parts,
                        labels: attributes.labels(defaults, model_keys),
                    });
                }
            }
        }
    }
    mapped
}

/// Which per-request log event a record is, if any.
fn log_family(record: &LogRecord, attributes: &Attributes<'_>) -> Option<Family> {
    let body = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.as_str(),
        _ => "",
    };
    let attribute = attributes.string("event.name").unwrap_or_default();
    let service = attributes.string("service.name").unwrap_or_default();
    let named = |name: &str| record.event_name == name || body == name || attribute == name;
    if named("claude_code.api_request") || (attribute == "api_request" && service == "claude-code")
    {
        Some(Family::ClaudeCodeLogs)
    } else if named("gemini_cli.api_response") {
        Some(Family::GeminiCliLogs)
    } else {
        None
    }
}

/// Adds numbers given as JSON values, keeping a non-number so validation names it.
fn sum(values: &[Option<Value>]) -> Value {
    let mut total: i64 = 0;
    for value in values.iter().flatten() {
        match value.as_i64() {
            Some(n) => total = total.saturating_add(n),
            None => return value.clone(),
        }
    }
    json!(total)
}

/// Claude Code's `api_request` and Gemini CLI's `api_response` log events: one model call each,
/// with its tokens (and, from Claude Code, its cost).
pub fn logs(request: &ExportLogsServiceRequest, defaults: &Defaults, now_ms: i64) -> Mapped {
    let mut mapped = Mapped::default();
    let empty = Vec::new();
    for resource_logs in &request.resource_logs {
        let resource = resource_logs
            .resource
            .as_ref()
            .map_or(&empty, |r| &r.attributes);
        for scope_logs in &resource_logs.scope_logs {
            for record in &scope_logs.log_records {
                let attributes = Attributes {
                    item: &record.attributes,
                    resource,
                };
                let Some(family) = log_family(record, &attributes) else {
                    continue;
                };
                let n = |key: &str| attributes.number(key);
                let (input, output, cache_read, cache_write, reasoning, cost) = match family {
                    // Claude Code's input_tokens excludes the cache, as Anthropic's API does.
                    Family::ClaudeCodeLogs => (
                        sum(&[
                            n("input_tokens"),
                            n("cache_read_tokens"),
                            n("cache_creation_tokens"),
                        ]),
                        sum(&[n("output_tokens")]),
                        n("cache_read_tokens"),
                        n("cache_creation_tokens"),
                        None,
                        n("cost_usd"),
                    ),
                    _ => (
                        sum(&[n("input_token_count"), n("tool_token_count")]),
                        sum(&[n("output_token_count"), n("thoughts_token_count")]),
                        n("cached_content_token_count"),
                        None,
                        n("thoughts_token_count"),
                        None,
                    ),
                };
                let time_ns = if record.time_unix_nano > 0 {
                    record.time_unix_nano
                } else {
                    record.observed_time_unix_nano
                };
                let labels = attributes.labels(defaults, &["model"]);
                let mut object = json!({
                    "type": "llm_usage",
                    "agent": labels.agent,
                    "model": labels.model,
                    "input_tokens": input,
                    "output_tokens": output,
                    "event_id": format!(
                        "otlp-log-{}",
                        digest(&[resource, &record.attributes], &time_ns.to_string())
                    ),
                });
                let fields = [
                    ("provider", labels.provider.map(Value::String)),
                    ("cache_read_tokens", cache_read),
                    ("cache_write_tokens", cache_write),
                    ("reasoning_tokens", reasoning),
                    ("cost_usd", cost),
                    ("trace_id", hex(&record.trace_id).map(Value::String)),
                    ("span_id", hex(&record.span_id).map(Value::String)),
                    ("ts", rfc3339(time_ns).map(Value::String)),
                ];
                for (key, value) in fields {
                    if let Some(value) = value {
                        object[key] = value;
                    }
                }
                let origin = format!("log event '{}'", family.label());
                match checked(object, &origin, now_ms) {
                    Ok(event) => mapped.records.push(Record {
                        owner: attributes.owner(),
                        family,
                        event,
                    }),
                    Err(problem) => mapped.rejected.push(problem),
                }
            }
        }
    }
    mapped
}

/// Builds the usage event of summed metric deltas; `identity` makes its idempotency key.
pub fn metric_event(
    family: Family,
    labels: &UsageLabels,
    time_ns: u64,
    totals: &[f64; 6],
    identity: &str,
    now_ms: i64,
) -> Result<Event, String> {
    let [input, cache_read, cache_write, output, reasoning, usd] = totals.map(|v| v.round());
    // Streams of one agent restart on their own; never let a cache part exceed its whole.
    let cache_write = cache_write.min(input);
    let cache_read = cache_read.min(input - cache_write);
    let mut object = json!({
        "type": "llm_usage",
        "agent": labels.agent,
        "model": labels.model,
        "input_tokens": input as u64,
        "output_tokens": output as u64,
        "cache_read_tokens": cache_read as u64,
        "cache_write_tokens": cache_write as u64,
        "reasoning_tokens": (reasoning as u64).min(output as u64),
        "event_id": format!("otlp-metric-{}", digest(&[], identity)),
    });
    if let Some(provider) = &labels.provider {
        object["provider"] = json!(provider);
    }
    if let Some(ts) = rfc3339(time_ns) {
        object["ts"] = json!(ts);
    }
    // Claude Code reports its cost as a metric of its own: its token points carry none, so
    // the price table must not add one.
    if family == Family::ClaudeCodeMetrics {
        object["cost_usd"] = json!(totals[5].max(0.0));
    } else if usd > 0.0 {
        object["cost_usd"] = json!(totals[5]);
    }
    checked(
        object,
        &format!("metric usage of '{}'", labels.model),
        now_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }
    fn s(key: &str, v: &str) -> KeyValue {
        kv(key, any_value::Value::StringValue(v.to_string()))
    }
    fn i(key: &str, v: i64) -> KeyValue {
        kv(key, any_value::Value::IntValue(v))
    }
    fn defaults() -> Defaults {
        Defaults {
            agent: "fallback".into(),
        }
    }
    fn resource(attributes: Vec<KeyValue>) -> Option<Resource> {
        Some(Resource {
            attributes,
            ..Default::default()
        })
    }

    fn logs_request(service: &str, log_records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(vec![s("service.name", service)]),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn usage(event: &Event) -> &crate::ingest::LlmUsage {
        match &event.body {
            crate::ingest::EventBody::LlmUsage(u) => u,
            other => panic!("not usage: {other:?}"),
        }
    }

    #[test]
    fn genai_span_attributes_become_one_usage_event_keyed_by_span_id() {
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            name: "chat gpt-4o".into(),
            end_time_unix_nano: 1_790_000_000_000_000_000,
            attributes: vec![
                s("gen_ai.request.model", "gpt-4o"),
                s("gen_ai.response.model", "gpt-4o-2024-08-06"),
                s("gen_ai.system", "openai"),
                i("gen_ai.usage.input_tokens", 1200),
                i("gen_ai.usage.output_tokens", 300),
                i("gen_ai.usage.cache_read.input_tokens", 200),
                s("gen_ai.agent.name", "planner"),
            ],
            ..Default::default()
        };
        let plain = Span {
            name: "http".into(),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(vec![s("service.name", "svc")]),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span, plain],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mapped = spans(&request, &defaults(), 0);
        assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
        assert_eq!(mapped.records.len(), 1, "the span without usage is ignored");
        let record = &mapped.records[0];
        let u = usage(&record.event);
        assert_eq!(
            (u.agent.as_str(), u.model.as_str(), u.provider.as_deref()),
            ("planner", "gpt-4o-2024-08-06", Some("openai"))
        );
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cache_read_tokens),
            (1200, 300, 200)
        );
        assert_eq!(
            record.event.event_id.as_deref(),
            Some(format!("otlp-span-{}-{}", "ab".repeat(16), "cd".repeat(8)).as_str())
        );
        assert_eq!(record.event.ts_ms, 1_790_000_000_000);
    }

    #[test]
    fn older_llm_usage_attributes_and_service_name_fallback() {
        let span = Span {
            span_id: vec![1; 8],
            trace_id: vec![2; 16],
            attributes: vec![
                i("llm.usage.prompt_tokens", 10),
                i("llm.usage.completion_tokens", 5),
                s("llm.request.model", "gpt-4o-mini"),
            ],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(vec![s("service.name", "unknown_service:python")]),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mapped = spans(&request, &defaults(), 0);
        let u = usage(&mapped.records[0].event);
        assert_eq!((u.input_tokens, u.output_tokens), (10, 5));
        assert_eq!(
            u.agent, "fallback",
            "the SDK's placeholder service name is no agent"
        );
    }

    #[test]
    fn exclusive_cache_counts_in_a_span_are_refused_with_the_rule() {
        let span = Span {
            span_id: vec![1; 8],
            trace_id: vec![2; 16],
            attributes: vec![
                i("gen_ai.usage.input_tokens", 10),
                i("gen_ai.usage.output_tokens", 5),
                i("gen_ai.usage.cache_read.input_tokens", 500),
                s("gen_ai.request.model", "gpt-4o"),
            ],
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mapped = spans(&request, &defaults(), 0);
        assert!(mapped.records.is_empty());
        assert!(
            mapped.rejected[0].starts_with("span 0101010101010101")
                && mapped.rejected[0].contains("cache"),
            "{:?}",
            mapped.rejected
        );
    }

    fn claude_metrics(points: Vec<(&str, &str, f64)>) -> ExportMetricsServiceRequest {
        let sum = |metric: &str| Metric {
            name: metric.to_string(),
            data: Some(metric::Data::Sum(Sum {
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
                data_points: points
                    .iter()
                    .filter(|(m, _, _)| *m == metric)
                    .map(|(_, kind, v)| NumberDataPoint {
                        attributes: [
                            Some(s("model", "claude-sonnet-4-5")),
                            Some(s("session.id", "s-1")),
                            (!kind.is_empty()).then(|| s("type", kind)),
                        ]
                        .into_iter()
                        .flatten()
                        .collect(),
                        time_unix_nano: 1_790_000_000_000_000_000,
                        value: Some(number_data_point::Value::AsDouble(*v)),
                        ..Default::default()
                    })
                    .collect(),
            })),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(vec![s("service.name", "claude-code")]),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![
                        sum("claude_code.token.usage"),
                        sum("claude_code.cost.usage"),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn claude_code_token_types_add_to_inclusive_input() {
        let mapped = metrics(
            &claude_metrics(vec![
                ("claude_code.token.usage", "input", 100.0),
                ("claude_code.token.usage", "cacheRead", 1000.0),
                ("claude_code.token.usage", "cacheCreation", 50.0),
                ("claude_code.token.usage", "output", 20.0),
                ("claude_code.token.usage", "bogus", 1.0),
                ("claude_code.cost.usage", "", 0.5),
            ]),
            &defaults(),
        );
        assert_eq!(mapped.points.len(), 5);
        assert_eq!(
            mapped.points[4].parts,
            &[Part::Usd],
            "cost points carry no type"
        );
        assert_eq!(mapped.rejected.len(), 1, "an unknown token type is named");
        assert!(mapped.rejected[0].contains("'bogus'"));
        let cache_read = &mapped.points[1];
        assert_eq!(cache_read.parts, &[Part::Input, Part::CacheRead]);
        assert_eq!(cache_read.labels.agent, "claude-code");
        assert_eq!(cache_read.owner, "claude-code||s-1");
        assert!(!cache_read.cumulative);
        let streams: std::collections::HashSet<_> =
            mapped.points.iter().map(|p| p.stream.clone()).collect();
        assert_eq!(streams.len(), 5, "each token type is its own stream");
    }

    #[test]
    fn claude_code_api_request_logs_carry_exact_cost() {
        let record = LogRecord {
            time_unix_nano: 1_790_000_000_000_000_000,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(
                    "claude_code.api_request".into(),
                )),
            }),
            attributes: vec![
                s("event.name", "api_request"),
                s("model", "claude-sonnet-4-5"),
                s("input_tokens", "100"),
                s("output_tokens", "20"),
                s("cache_read_tokens", "1000"),
                s("cache_creation_tokens", "50"),
                s("cost_usd", "0.0123"),
                s("session.id", "s-1"),
            ],
            ..Default::default()
        };
        let request = logs_request("claude-code", vec![record, LogRecord::default()]);
        let mapped = logs(&request, &defaults(), 0);
        assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
        assert_eq!(mapped.records.len(), 1);
        let u = usage(&mapped.records[0].event);
        assert_eq!(
            (
                u.input_tokens,
                u.cache_read_tokens,
                u.cache_write_tokens,
                u.output_tokens
            ),
            (1150, 1000, 50, 20)
        );
        assert_eq!(u.cost_usd, Some(0.0123));
        assert_eq!(mapped.records[0].family, Family::ClaudeCodeLogs);
    }

    #[test]
    fn gemini_api_response_counts_thoughts_as_output_and_tools_as_input() {
        let record = LogRecord {
            time_unix_nano: 1_790_000_000_000_000_000,
            attributes: vec![
                s("event.name", "gemini_cli.api_response"),
                s("model", "gemini-2.5-pro"),
                i("input_token_count", 1000),
                i("output_token_count", 100),
                i("cached_content_token_count", 400),
                i("thoughts_token_count", 50),
                i("tool_token_count", 10),
            ],
            ..Default::default()
        };
        let request = logs_request("gemini-cli", vec![record]);
        let mapped = logs(&request, &defaults(), 0);
        let u = usage(&mapped.records[0].event);
        assert_eq!(
            (
                u.input_tokens,
                u.cache_read_tokens,
                u.output_tokens,
                u.reasoning_tokens
            ),
            (1010, 400, 150, 50)
        );
        assert_eq!(u.cost_usd, None, "priced from the table");
    }

    #[test]
    fn metric_events_keep_cache_within_input_and_claude_cost_exact() {
        let labels = UsageLabels {
            agent: "a".into(),
            model: "m".into(),
            provider: None,
        };
        let event = metric_event(
            Family::GeminiCliMetrics,
            &labels,
            0,
            &[10.0, 15.0, 0.0, 3.0, 1.0, 0.0],
            "x",
            0,
        )
        .expect("valid");
        let u = usage(&event);
        assert_eq!((u.input_tokens, u.cache_read_tokens), (10, 10));
        assert_eq!(u.cost_usd, None);
        let claude = metric_event(
            Family::ClaudeCodeMetrics,
            &labels,
            0,
            &[10.0, 0.0, 0.0, 3.0, 0.0, 0.0],
            "y",
            0,
        )
        .expect("valid");
        assert_eq!(
            usage(&claude).cost_usd,
            Some(0.0),
            "cost comes from its own metric"
        );
    }
}

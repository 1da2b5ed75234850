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
use sha2::{Digest, Sha256};

use crate::ingest::Event;
use crate::ingest::event::{Draft, Raw};

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
    CodexLogs,
    /// The semantic conventions' `gen_ai.client.inference.usage.*` counters.
    GenAiCounters,
    /// Codex's `codex.turn.token_usage` histogram.
    CodexMetrics,
    /// Cursor's `cursor.token.usage` and `cursor.cost.usage`.
    CursorMetrics,
    /// Cursor's `cursor.api.request` log events.
    CursorLogs,
}

impl Family {
    pub const ALL: [Family; 11] = [
        Family::Spans,
        Family::GenAiMetric,
        Family::ClaudeCodeMetrics,
        Family::ClaudeCodeLogs,
        Family::GeminiCliMetrics,
        Family::GeminiCliLogs,
        Family::CodexLogs,
        Family::GenAiCounters,
        Family::CodexMetrics,
        Family::CursorMetrics,
        Family::CursorLogs,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Family::Spans => "gen_ai_spans",
            Family::GenAiMetric => "gen_ai_metric",
            Family::ClaudeCodeMetrics => "claude_code_metrics",
            Family::ClaudeCodeLogs => "claude_code_logs",
            Family::GeminiCliMetrics => "gemini_cli_metrics",
            Family::GeminiCliLogs => "gemini_cli_logs",
            Family::CodexLogs => "codex_logs",
            Family::GenAiCounters => "gen_ai_counters",
            Family::CodexMetrics => "codex_metrics",
            Family::CursorMetrics => "cursor_metrics",
            Family::CursorLogs => "cursor_logs",
        }
    }

    pub fn from_label(label: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.label() == label)
    }

    /// The OTLP signal that carries this family.
    pub fn signal(self) -> super::Signal {
        match self {
            Family::Spans => super::Signal::Traces,
            Family::GenAiMetric
            | Family::ClaudeCodeMetrics
            | Family::GeminiCliMetrics
            | Family::GenAiCounters
            | Family::CodexMetrics
            | Family::CursorMetrics => super::Signal::Metrics,
            Family::ClaudeCodeLogs
            | Family::GeminiCliLogs
            | Family::CodexLogs
            | Family::CursorLogs => super::Signal::Logs,
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
    /// A span that names no model, whose parent (this id) was not in its request: it waits
    /// for the parent to say the model (Codex puts it on the turn span, which ends last).
    pub awaiting: Option<String>,
}

/// What a span without usage says to the spans under it: its model, and its own parent.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub span_id: String,
    pub parent: Option<String>,
    pub model: Option<String>,
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
    /// Spans without usage that may be the parent a held span waits for.
    pub hints: Vec<Hint>,
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
    /// NaN, infinities and text stay as they are, so the rule refuses them by name instead of
    /// reading a missing count as 0.
    fn number(&self, key: &str) -> Option<Raw> {
        Some(match self.get(key)? {
            any_value::Value::IntValue(i) => Raw::Int(*i),
            any_value::Value::DoubleValue(d) => Raw::Float(*d),
            any_value::Value::StringValue(s) => Raw::parse_number(s),
            _ => Raw::Other("a non-numeric value"),
        })
    }

    fn first_number(&self, keys: &[&str]) -> Option<Raw> {
        keys.iter().find_map(|k| self.number(k))
    }

    /// The reported cost in USD; a cost in another currency is not one (it is priced instead).
    fn cost_usd(&self) -> Option<Raw> {
        let in_usd = self
            .string(COST_CURRENCY_KEY)
            .is_none_or(|c| c.eq_ignore_ascii_case("usd"));
        if !in_usd {
            return self.number(COST_KEYS[1]);
        }
        self.first_number(&COST_KEYS)
    }

    /// Whether the reported cost is the client's own reckoning rather than the provider's:
    /// `gen_ai.usage.cost.source = local`, or LiteLLM's figure (from its own price table).
    fn cost_estimated(&self) -> bool {
        match self.string(COST_SOURCE_KEY) {
            Some(source) => source.eq_ignore_ascii_case("local"),
            None => self.number(COST_KEYS[0]).is_none() && self.number(COST_KEYS[1]).is_some(),
        }
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
// opencode (the Vercel AI SDK) reports input with the cache included in
// `gen_ai.usage.input_tokens`, and its split only under `ai.usage.inputTokenDetails`.
const CACHE_READ_KEYS: [&str; 3] = [
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "ai.usage.inputTokenDetails.cacheReadTokens",
];
// `cache_write` is the current semantic-conventions name (the Anthropic SDK's own tracing uses
// it); `cache_creation` the earlier one.
const CACHE_WRITE_KEYS: [&str; 4] = [
    "gen_ai.usage.cache_write.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
    "ai.usage.inputTokenDetails.cacheWriteTokens",
];
/// The call's cost as the client computed or the provider reported it: the proposed semantic
/// convention (with `gen_ai.usage.cost.currency`), then LiteLLM's. Either is taken as the
/// event's `cost_usd`, so it is not priced again from the table.
const COST_KEYS: [&str; 2] = ["gen_ai.usage.cost.amount", "gen_ai.cost.total_cost"];
const COST_CURRENCY_KEY: &str = "gen_ai.usage.cost.currency";
/// `provider` or `local` (the proposed convention).
const COST_SOURCE_KEY: &str = "gen_ai.usage.cost.source";
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

    /// Whose usage this is — an agent instance's use of one model: one family of signals meters
    /// it at a time. The model is part of it because one process may hold several clients
    /// instrumented differently (an OpenAI client seen only by its histogram, an Anthropic one
    /// by its spans): a family covering one model says nothing of another's calls.
    fn owner(&self, model: &str) -> String {
        let part = |k: &str| self.string(k).unwrap_or_default();
        format!(
            "{}|{}|{}|{}",
            part("service.name"),
            part("service.instance.id"),
            part("session.id"),
            crate::ingest::event::model_label(model)
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

pub(super) fn hex(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty() && bytes.iter().any(|b| *b != 0)).then(|| {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    })
}

pub(super) fn rfc3339(ns: u64) -> Option<String> {
    let ns = i128::from(ns);
    (ns > 0)
        .then(|| jiff::Timestamp::from_nanosecond(ns).ok())
        .flatten()
        .map(|t| t.to_string())
}

/// A stable digest of attributes and extra text, for stream and event identities.
pub(super) fn digest(parts: &[&[KeyValue]], extra: &str) -> String {
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

/// Turns one mapped usage into an event, or says why not, naming where it came from.
pub(super) fn checked(draft: &Draft, origin: &str, now_ms: i64) -> Result<Event, String> {
    draft
        .llm_usage(now_ms)
        .map_err(|problem| format!("{origin}: {problem}"))
}

mod logs;
mod metrics;
mod spans;
#[cfg(test)]
mod tests;

pub use logs::logs;
pub use metrics::{metric_event, metrics};
pub use spans::spans;

//! The event schema and its validation: the one place that says which fields each event type
//! has and what each may hold. HTTP ingest hands it JSON objects; the OTLP mapping hands it a
//! [`Draft`] built from span, metric and log attributes (no JSON in between); both end as the
//! same [`Event`], checked by the same rules, and `emit` builds what it sends from the same
//! field names.
//!
//! Events are checked field by field rather than through serde derive, so every rejection
//! names the field and the rule (`field 'input_tokens': must be a whole number from 0 to
//! 100000000, got -5`) and all problems of one event are reported together. Unknown fields are
//! refused: that is also how prompt or completion text is kept out.

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use super::fields::{Draft, Fields, Raw};

/// Most tokens one usage event may carry: above any context window sold today.
pub const MAX_TOKENS_PER_EVENT: u64 = 100_000_000;
/// Most USD one usage event may carry.
pub const MAX_COST_USD_PER_EVENT: f64 = 10_000.0;
/// Longest label-like value (agent, model, task type, …), in characters.
pub const MAX_LABEL_CHARS: usize = 256;
/// Longest identifier (event, run, task ids), in characters.
pub const MAX_ID_CHARS: usize = 128;
/// Longest error summary, in characters.
pub const MAX_SUMMARY_CHARS: usize = 1024;
/// Longest lock wait one event may report: a day.
pub const MAX_LOCK_WAIT_SECONDS: f64 = 86_400.0;
/// Largest single file write: 1 TiB.
pub const MAX_FILE_WRITE_BYTES: u64 = 1 << 40;

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Option<String>,
    /// Milliseconds since the Unix epoch; "now" when the event gave none.
    pub ts_ms: i64,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    LlmUsage(LlmUsage),
    RunStart {
        run_id: String,
        agent: Option<String>,
        name: Option<String>,
    },
    RunEnd {
        run_id: String,
        agent: Option<String>,
        name: Option<String>,
        outcome: Outcome,
    },
    TaskStart {
        task_id: String,
        run_id: Option<String>,
        task_type: String,
        agent: Option<String>,
    },
    TaskEnd {
        task_id: String,
        run_id: Option<String>,
        task_type: String,
        agent: Option<String>,
        outcome: Outcome,
    },
    LockWait {
        seconds: f64,
        lock: Option<String>,
    },
    FileWrite {
        task_id: Option<String>,
        bytes: u64,
        /// SHA-256 of the path, hex; the path itself is never stored.
        path_hash: Option<String>,
    },
}

/// Token usage as reported. `input_tokens` counts all input, cached included (the
/// OpenTelemetry GenAI convention); the cache counts are parts of it. Serialized only for
/// usage the OTLP receiver holds back for a moment (`otlp::streams::Held`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LlmUsage {
    pub agent: String,
    pub model: String,
    pub provider: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_usd: Option<f64>,
    /// The tokens or the cost are an estimate (a stream cut before the provider's count, a
    /// client library's own reckoning): field `accuracy = "estimated"`.
    pub estimated: bool,
    pub task_id: Option<String>,
    pub run_id: Option<String>,
    /// The provider's ids of the call (`response_id`, `request_id`): usage whose call was
    /// already counted, under either id, by any source, is a duplicate.
    pub call_ids: Vec<String>,
}

impl LlmUsage {
    /// Input that was neither read from nor written to a cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens - self.cache_read_tokens - self.cache_write_tokens
    }
}

/// How a run or task ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub result: String,
    pub failure_class: Option<String>,
    pub error_summary: Option<String>,
}

/// How exact an `llm_usage` event's figures are: as the provider counted them (the default), or
/// estimated.
pub const ACCURACIES: &[&str] = &["exact", "estimated"];
pub const RESULTS: &[&str] = &["success", "failure", "cancelled", "timeout"];
pub const FAILURE_CLASSES: &[&str] = &[
    "setup",
    "stream_disconnect",
    "tool",
    "budget",
    "timeout",
    "cancelled",
    "internal",
];
pub const EVENT_TYPES: &[&str] = &[
    "llm_usage",
    "run_start",
    "run_end",
    "task_start",
    "task_end",
    "lock_wait",
    "file_write",
];

impl EventBody {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::LlmUsage(_) => "llm_usage",
            EventBody::RunStart { .. } => "run_start",
            EventBody::RunEnd { .. } => "run_end",
            EventBody::TaskStart { .. } => "task_start",
            EventBody::TaskEnd { .. } => "task_end",
            EventBody::LockWait { .. } => "lock_wait",
            EventBody::FileWrite { .. } => "file_write",
        }
    }
}

/// Fields every event may carry.
const COMMON_FIELDS: &[&str] = &["type", "event_id", "ts", "trace_id", "span_id"];

fn fields_of(event_type: &str) -> &'static [&'static str] {
    match event_type {
        "llm_usage" => &[
            "agent",
            "model",
            "provider",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cost_usd",
            "task_id",
            "run_id",
            "response_id",
            "request_id",
            "accuracy",
        ],
        "run_start" => &["run_id", "agent", "name"],
        "run_end" => &[
            "run_id",
            "agent",
            "name",
            "result",
            "failure_class",
            "error_summary",
        ],
        "task_start" => &["task_id", "run_id", "task_type", "agent"],
        "task_end" => &[
            "task_id",
            "run_id",
            "task_type",
            "agent",
            "result",
            "failure_class",
            "error_summary",
        ],
        "lock_wait" => &["seconds", "lock"],
        "file_write" => &["task_id", "bytes", "path"],
        _ => &[],
    }
}

/// Reads typed fields out of one event's fields, collecting every problem.
struct Reader<'a> {
    fields: &'a dyn Fields,
    problems: Vec<String>,
}

/// What kind of string a field holds; decides the length limit and character rules.
#[derive(Clone, Copy)]
enum Text {
    /// Becomes a metric label value: no control characters.
    Label,
    Id,
    Summary,
    /// Hashed before storage; any characters.
    Opaque,
}

impl<'a> Reader<'a> {
    fn fail(&mut self, field: &str, rule: impl std::fmt::Display) {
        self.problems.push(format!("field '{field}': {rule}"));
    }

    /// The field's value, or `None` (a problem when it is required).
    fn given(&mut self, field: &str, required: bool) -> Option<Raw> {
        let value = self.fields.raw(field);
        if value.is_none() && required {
            self.fail(field, "is required");
        }
        value
    }

    fn string(&mut self, field: &str, kind: Text, required: bool) -> Option<String> {
        let value = self.given(field, required)?;
        let Raw::Text(text) = value else {
            self.fail(field, format!("must be a string, got {}", value.kind()));
            return None;
        };
        let (max, name) = match kind {
            Text::Label => (MAX_LABEL_CHARS, "label"),
            Text::Id => (MAX_ID_CHARS, "id"),
            Text::Summary => (MAX_SUMMARY_CHARS, "summary"),
            Text::Opaque => (4096, "path"),
        };
        let chars = text.chars().count();
        if chars == 0 && !matches!(kind, Text::Summary) {
            self.fail(field, "must not be empty");
            return None;
        }
        if chars > max {
            self.fail(
                field,
                format!("is {chars} characters long; a {name} may have at most {max}"),
            );
            return None;
        }
        let forbids_control = !matches!(kind, Text::Opaque | Text::Summary);
        if forbids_control && text.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
            return None;
        }
        Some(text)
    }

    fn count(&mut self, field: &str, max: u64, required: bool) -> Option<u64> {
        let value = self.given(field, required)?;
        let rule = format!("must be a whole number from 0 to {max}");
        match value {
            Raw::Int(i) => {
                if let Some(v) = u64::try_from(i).ok().filter(|v| *v <= max) {
                    return Some(v);
                }
                self.fail(field, format!("{rule}, got {i}"));
            }
            Raw::Float(f) => self.fail(field, format!("{rule}, got {f}")),
            other => self.fail(field, format!("{rule}, got {}", other.kind())),
        }
        None
    }

    fn amount(&mut self, field: &str, max: f64, required: bool) -> Option<f64> {
        let value = self.given(field, required)?;
        let number = match value {
            Raw::Int(i) => i as f64,
            Raw::Float(f) => f,
            other => {
                self.fail(
                    field,
                    format!("must be a number from 0 to {max}, got {}", other.kind()),
                );
                return None;
            }
        };
        if number.is_finite() && (0.0..=max).contains(&number) {
            Some(number)
        } else {
            self.fail(
                field,
                format!("must be a number from 0 to {max}, got {number}"),
            );
            None
        }
    }

    fn one_of(&mut self, field: &str, allowed: &[&str], required: bool) -> Option<String> {
        let text = self.string(field, Text::Label, required)?;
        if allowed.contains(&text.as_str()) {
            Some(text)
        } else {
            self.fail(
                field,
                format!("must be one of {}, got '{text}'", allowed.join(", ")),
            );
            None
        }
    }

    fn hex(&mut self, field: &str, digits: usize) -> Option<String> {
        let text = self.string(field, Text::Id, false)?;
        let valid = text.len() == digits
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && text.bytes().any(|b| b != b'0');
        if valid {
            Some(text)
        } else {
            self.fail(
                field,
                format!("must be {digits} lowercase hex digits, not all zero (W3C trace context)"),
            );
            None
        }
    }

    fn outcome(&mut self) -> Option<Outcome> {
        let result = self.one_of("result", RESULTS, true);
        let failure_class = self.one_of("failure_class", FAILURE_CLASSES, false);
        let error_summary = self.string("error_summary", Text::Summary, false);
        Some(Outcome {
            result: result?,
            failure_class,
            error_summary,
        })
    }
}

pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The event type named by a value, for the `type` label of rejected events.
pub fn type_label(value: &Value) -> &'static str {
    value
        .get("type")
        .and_then(Value::as_str)
        .and_then(|t| EVENT_TYPES.iter().find(|known| **known == t).copied())
        .unwrap_or("unknown")
}

/// Refuses an event dated before the store's retention: its id would be forgotten when old
/// rows fold into rollups, so a resend would count it again. Refusing it keeps exactly-once
/// true for everything accepted.
pub fn check_age(ts_ms: i64, now_ms: i64, retention: std::time::Duration) -> Result<(), String> {
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    if ts_ms < now_ms.saturating_sub(retention_ms) {
        let ts = jiff::Timestamp::from_millisecond(ts_ms)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| ts_ms.to_string());
        return Err(format!(
            "field 'ts': {ts} is older than the store's retention ({}); such an event cannot be kept exactly once and is refused",
            humantime::format_duration(retention)
        ));
    }
    Ok(())
}

/// Validates one event. `now_ms` stands in for a missing `ts`.
pub fn validate(value: &Value, now_ms: i64) -> Result<Event, String> {
    let Some(object) = value.as_object() else {
        return Err(format!(
            "an event must be a JSON object, got {}",
            json_kind(value)
        ));
    };
    let event_type = match object.get("type") {
        Some(Value::String(t)) if EVENT_TYPES.contains(&t.as_str()) => t.as_str(),
        Some(Value::String(t)) => {
            return Err(format!(
                "field 'type': must be one of {}, got '{}'",
                EVENT_TYPES.join(", "),
                t.chars().take(64).collect::<String>()
            ));
        }
        Some(other) => {
            return Err(format!(
                "field 'type': must be a string, got {}",
                json_kind(other)
            ));
        }
        None => return Err("field 'type': is required".to_string()),
    };
    check_fields(event_type, object, now_ms)
}

/// Checks one event of `event_type` (a known type) from its fields.
pub(super) fn check_fields(
    event_type: &str,
    fields: &dyn Fields,
    now_ms: i64,
) -> Result<Event, String> {
    let mut reader = Reader {
        fields,
        problems: Vec::new(),
    };
    let allowed = fields_of(event_type);
    for key in fields.names() {
        if !COMMON_FIELDS.contains(&key) && !allowed.contains(&key) {
            let shown: String = key.chars().take(64).collect();
            reader.problems.push(format!(
                "field '{shown}': unknown for type {event_type}; allowed: {}",
                allowed.join(", ")
            ));
        }
    }

    let event_id = reader.string("event_id", Text::Id, false);
    let ts_ms = match reader.string("ts", Text::Id, false) {
        None => Some(now_ms),
        Some(text) => match text.parse::<jiff::Timestamp>() {
            Ok(ts) => Some(ts.as_millisecond()),
            Err(_) => {
                reader.fail(
                    "ts",
                    format!("'{text}' is not an RFC 3339 timestamp such as 2026-11-23T10:00:00Z"),
                );
                None
            }
        },
    };
    let trace_id = reader.hex("trace_id", 32);
    let span_id = reader.hex("span_id", 16);

    let body = match event_type {
        "llm_usage" => llm_usage(&mut reader).map(EventBody::LlmUsage),
        "run_start" => {
            let run_id = reader.string("run_id", Text::Id, true);
            let agent = reader.string("agent", Text::Label, false);
            let name = reader.string("name", Text::Label, false);
            run_id.map(|run_id| EventBody::RunStart {
                run_id,
                agent,
                name,
            })
        }
        "run_end" => {
            let run_id = reader.string("run_id", Text::Id, true);
            let agent = reader.string("agent", Text::Label, false);
            let name = reader.string("name", Text::Label, false);
            let outcome = reader.outcome();
            run_id
                .zip(outcome)
                .map(|(run_id, outcome)| EventBody::RunEnd {
                    run_id,
                    agent,
                    name,
                    outcome,
                })
        }
        "task_start" => {
            let task_id = reader.string("task_id", Text::Id, true);
            let run_id = reader.string("run_id", Text::Id, false);
            let task_type = reader.string("task_type", Text::Label, true);
            let agent = reader.string("agent", Text::Label, false);
            task_id
                .zip(task_type)
                .map(|(task_id, task_type)| EventBody::TaskStart {
                    task_id,
                    run_id,
                    task_type,
                    agent,
                })
        }
        "task_end" => {
            let task_id = reader.string("task_id", Text::Id, true);
            let run_id = reader.string("run_id", Text::Id, false);
            let task_type = reader.string("task_type", Text::Label, true);
            let agent = reader.string("agent", Text::Label, false);
            let outcome = reader.outcome();
            match (task_id, task_type, outcome) {
                (Some(task_id), Some(task_type), Some(outcome)) => Some(EventBody::TaskEnd {
                    task_id,
                    run_id,
                    task_type,
                    agent,
                    outcome,
                }),
                _ => None,
            }
        }
        "lock_wait" => {
            let seconds = reader.amount("seconds", MAX_LOCK_WAIT_SECONDS, true);
            let lock = reader.string("lock", Text::Label, false);
            seconds.map(|seconds| EventBody::LockWait { seconds, lock })
        }
        "file_write" => {
            let task_id = reader.string("task_id", Text::Id, false);
            let bytes = reader.count("bytes", MAX_FILE_WRITE_BYTES, true);
            let path_hash = reader.string("path", Text::Opaque, false).map(|path| {
                let digest = Sha256::digest(path.as_bytes());
                digest.iter().map(|b| format!("{b:02x}")).collect()
            });
            bytes.map(|bytes| EventBody::FileWrite {
                task_id,
                bytes,
                path_hash,
            })
        }
        _ => None,
    };

    match (reader.problems.is_empty(), body, ts_ms) {
        (true, Some(body), Some(ts_ms)) => Ok(Event {
            event_id,
            ts_ms,
            trace_id,
            span_id,
            body,
        }),
        _ => Err(reader.problems.join("; ")),
    }
}

/// The model as a label: a context variant in brackets (Claude Code's `claude-opus-4-8[1m]`,
/// which its metrics carry and its logs do not) is dropped, so one model is one series.
pub fn model_label(model: &str) -> std::borrow::Cow<'_, str> {
    match model
        .trim_end()
        .strip_suffix(']')
        .and_then(|m| m.rsplit_once('['))
    {
        Some((base, _)) if !base.is_empty() => std::borrow::Cow::Owned(base.to_string()),
        _ => std::borrow::Cow::Borrowed(model),
    }
}

fn llm_usage(reader: &mut Reader<'_>) -> Option<LlmUsage> {
    let agent = reader.string("agent", Text::Label, true);
    // Most ids carry no context variant: the string is kept, not copied.
    let model = reader
        .string("model", Text::Label, true)
        .map(|m| match model_label(&m) {
            std::borrow::Cow::Owned(label) => label,
            std::borrow::Cow::Borrowed(_) => m,
        });
    let provider = reader.string("provider", Text::Label, false);
    let input = reader.count("input_tokens", MAX_TOKENS_PER_EVENT, true);
    let output = reader.count("output_tokens", MAX_TOKENS_PER_EVENT, true);
    let cache_read = reader
        .count("cache_read_tokens", MAX_TOKENS_PER_EVENT, false)
        .unwrap_or(0);
    let cache_write = reader
        .count("cache_write_tokens", MAX_TOKENS_PER_EVENT, false)
        .unwrap_or(0);
    let reasoning = reader
        .count("reasoning_tokens", MAX_TOKENS_PER_EVENT, false)
        .unwrap_or(0);
    let cost_usd = reader.amount("cost_usd", MAX_COST_USD_PER_EVENT, false);
    let estimated = reader
        .one_of("accuracy", ACCURACIES, false)
        .is_some_and(|a| a == "estimated");
    let task_id = reader.string("task_id", Text::Id, false);
    let run_id = reader.string("run_id", Text::Id, false);
    let call_ids = ["response_id", "request_id"]
        .into_iter()
        .filter_map(|field| reader.string(field, Text::Id, false))
        .collect();
    if let Some(input) = input
        && cache_read + cache_write > input
    {
        reader.fail(
            "cache_read_tokens",
            format!(
                "cache_read_tokens + cache_write_tokens ({}) exceed input_tokens ({input}); input_tokens must count ALL input, cached included (OpenTelemetry GenAI convention) — add the cache counts to input_tokens if your provider reports them separately",
                cache_read + cache_write
            ),
        );
    }
    if let Some(output) = output
        && reasoning > output
    {
        reader.fail(
            "reasoning_tokens",
            format!("reasoning_tokens ({reasoning}) exceed output_tokens ({output}); reasoning tokens are part of output_tokens"),
        );
    }
    Some(LlmUsage {
        agent: agent?,
        model: model?,
        provider,
        input_tokens: input?,
        output_tokens: output?,
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: reasoning,
        cost_usd,
        estimated,
        task_id,
        run_id,
        call_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_and_a_json_object_are_held_to_the_same_rules() {
        let mut draft = Draft::default();
        draft
            .text("agent", "a")
            .text("model", "m")
            .set("input_tokens", Raw::Float(f64::NAN))
            .set("output_tokens", Raw::parse_number(" 12 "))
            .set("cache_read_tokens", Raw::parse_number("lots"));
        let problem = draft.llm_usage(0).expect_err("NaN is no count");
        assert!(
            problem.contains("field 'input_tokens': must be a whole number from 0 to 100000000, got NaN")
                && problem.contains("field 'cache_read_tokens': must be a whole number from 0 to 100000000, got a string"),
            "{problem}"
        );
        let from_json = validate(
            &serde_json::json!({"type": "llm_usage", "agent": "a", "model": "m",
                                "input_tokens": 1.5, "output_tokens": 12, "cache_read_tokens": "lots"}),
            0,
        )
        .expect_err("1.5 is no count");
        assert!(from_json.contains("got 1.5") && from_json.contains("'cache_read_tokens'"));
        draft
            .count("input_tokens", 20)
            .set("cache_read_tokens", Raw::Int(5));
        let event = draft.llm_usage(7).expect("now valid");
        let EventBody::LlmUsage(usage) = event.body else {
            panic!("usage")
        };
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens
            ),
            (20, 12, 5)
        );
        assert_eq!(event.ts_ms, 7, "no ts: now");
        draft.text("prompt", "secret");
        let unknown = draft.llm_usage(0).expect_err("no prompt field");
        assert!(
            unknown.contains("field 'prompt': unknown for type llm_usage"),
            "{unknown}"
        );
    }

    #[test]
    fn events_older_than_retention_are_refused_by_name() {
        let day = std::time::Duration::from_secs(86_400);
        let now = 1_795_428_000_000;
        assert!(check_age(now - 3_600_000, now, day).is_ok());
        let problem = check_age(0, now, day).expect_err("1970 is too old");
        assert!(
            problem.starts_with(
                "field 'ts': 1970-01-01T00:00:00Z is older than the store's retention (1day)"
            ),
            "{problem}"
        );
    }
    use serde_json::json;

    fn check(value: Value) -> Result<Event, String> {
        validate(&value, 1_700_000_000_000)
    }

    #[test]
    fn a_full_usage_event_validates() {
        let event = check(json!({
            "type": "llm_usage", "event_id": "e1", "ts": "2026-11-23T10:00:00+01:00",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7",
            "agent": "coder", "model": "gpt-5", "input_tokens": 1000, "output_tokens": 200,
            "cache_read_tokens": 600, "cache_write_tokens": 100, "reasoning_tokens": 50
        }))
        .expect("valid");
        assert_eq!(event.ts_ms, 1_795_424_400_000, "10:00+01:00 is 09:00Z");
        let EventBody::LlmUsage(usage) = event.body else {
            panic!("usage")
        };
        assert_eq!(usage.uncached_input_tokens(), 300);
    }

    #[test]
    fn every_problem_of_an_event_is_named() {
        let error = check(json!({
            "type": "llm_usage", "agent": "a\u{7}b", "model": "m",
            "input_tokens": -5, "output_tokens": 1.5, "prompt": "secret"
        }))
        .expect_err("invalid");
        assert!(
            error.contains("field 'prompt': unknown for type llm_usage"),
            "{error}"
        );
        assert!(
            error.contains("field 'agent': must not contain control characters"),
            "{error}"
        );
        assert!(
            error.contains(
                "field 'input_tokens': must be a whole number from 0 to 100000000, got -5"
            ),
            "{error}"
        );
        assert!(
            error.contains(
                "field 'output_tokens': must be a whole number from 0 to 100000000, got 1.5"
            ),
            "{error}"
        );
    }

    #[test]
    fn cache_counts_above_input_are_refused_with_the_rule() {
        let error = check(json!({
            "type": "llm_usage", "agent": "a", "model": "m",
            "input_tokens": 100, "output_tokens": 1, "cache_read_tokens": 900
        }))
        .expect_err("exclusive counts");
        assert!(
            error.contains("must count ALL input, cached included"),
            "{error}"
        );
    }

    #[test]
    fn file_paths_are_only_kept_as_hashes() {
        let event =
            check(json!({"type": "file_write", "bytes": 10, "path": "/home/me/secret.txt"}))
                .expect("valid");
        let EventBody::FileWrite { path_hash, .. } = event.body else {
            panic!("file_write")
        };
        let hash = path_hash.expect("hashed");
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains("secret"));
    }

    #[test]
    fn task_end_needs_a_known_result_and_failure_class() {
        let error = check(json!({
            "type": "task_end", "task_id": "t", "task_type": "build",
            "result": "exploded", "failure_class": "gremlins"
        }))
        .expect_err("bad enums");
        assert!(error.contains("field 'result': must be one of success, failure, cancelled, timeout, got 'exploded'"), "{error}");
        assert!(
            error.contains("field 'failure_class': must be one of"),
            "{error}"
        );
    }
}

//! Per-request log events: Claude Code's `api_request`, Gemini CLI's `api_response`, Codex's
//! `sse_event` of a completed response, Cursor's `api_request`.

use super::*;

/// Which per-request log event a record is, if any.
pub(super) fn log_family(record: &LogRecord, attributes: &Attributes<'_>) -> Option<Family> {
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
    } else if named("cursor.api.request") {
        Some(Family::CursorLogs)
    } else if named("gemini_cli.api_response") {
        Some(Family::GeminiCliLogs)
    } else if named("codex.sse_event")
        && attributes.string("event.kind").as_deref() == Some("response.completed")
    {
        // Codex logs every server-sent event; only the completed response carries its usage.
        Some(Family::CodexLogs)
    } else {
        None
    }
}

/// Adds counts, keeping the first value that is not a whole number so the rule names it.
pub(super) fn sum(values: &[Option<Raw>]) -> Raw {
    let mut total: i64 = 0;
    for value in values.iter().flatten() {
        match value {
            Raw::Int(n) => total = total.saturating_add(*n),
            other => return other.clone(),
        }
    }
    Raw::Int(total)
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
                    // Cursor counts each kind apart, as Anthropic's API does.
                    Family::CursorLogs => {
                        let cache_write =
                            n("cache_creation_tokens").or_else(|| n("cache_write_tokens"));
                        (
                            sum(&[
                                n("input_tokens"),
                                n("cache_read_tokens"),
                                cache_write.clone(),
                            ]),
                            sum(&[n("output_tokens")]),
                            n("cache_read_tokens"),
                            cache_write,
                            None,
                            n("cost_usd"),
                        )
                    }
                    // Codex reports the Responses API's usage: input includes the cached part,
                    // output includes the reasoning.
                    Family::CodexLogs => (
                        sum(&[n("input_token_count")]),
                        sum(&[n("output_token_count")]),
                        n("cached_token_count"),
                        n("cache_write_token_count"),
                        n("reasoning_token_count"),
                        None,
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
                let owner = attributes.owner(&labels.model);
                let mut draft = Draft::default();
                draft
                    .text("agent", labels.agent)
                    .text("model", labels.model)
                    .set("input_tokens", input)
                    .set("output_tokens", output)
                    .text(
                        "event_id",
                        match attributes.string("cursor.event.id") {
                            // Cursor names each event: a resend under a new time counts once.
                            Some(id) if family == Family::CursorLogs => {
                                format!("otlp-cursor-{}", digest(&[], &id))
                            }
                            _ => format!(
                                "otlp-log-{}",
                                digest(&[resource, &record.attributes], &time_ns.to_string())
                            ),
                        },
                    )
                    .maybe("provider", labels.provider.map(Raw::Text))
                    .maybe("cache_read_tokens", cache_read)
                    .maybe("cache_write_tokens", cache_write)
                    .maybe("reasoning_tokens", reasoning)
                    .maybe("cost_usd", cost)
                    // Claude Code's `request_id` is Anthropic's `request-id` header, which the
                    // proxy records too: the call counts once.
                    .maybe(
                        "request_id",
                        match family {
                            Family::ClaudeCodeLogs => attributes.string("request_id"),
                            // Cursor's own id of the event: a re-emitted event is one call.
                            Family::CursorLogs => attributes
                                .string("cursor.event.id")
                                .map(|id| format!("cursor-{id}")),
                            _ => None,
                        }
                        .map(Raw::Text),
                    )
                    .maybe("trace_id", hex(&record.trace_id).map(Raw::Text))
                    .maybe("span_id", hex(&record.span_id).map(Raw::Text))
                    .maybe("ts", rfc3339(time_ns).map(Raw::Text));
                let origin = format!("log event '{}'", family.label());
                match checked(&draft, &origin, now_ms) {
                    Ok(event) => mapped.records.push(Record {
                        owner,
                        family,
                        event,
                        awaiting: None,
                    }),
                    Err(problem) => mapped.rejected.push(problem),
                }
            }
        }
    }
    mapped
}

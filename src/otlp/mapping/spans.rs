//! Spans with GenAI (or older `llm.usage.*`) token attributes.

use super::*;

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
                let event_id = match (&trace_id, &span_id) {
                    (Some(t), Some(s)) => format!("otlp-span-{t}-{s}"),
                    // No ids: the span's content is its identity, so a resend of the same
                    // span still counts once.
                    _ => format!(
                        "otlp-span-{}",
                        digest(
                            &[resource, &span.attributes],
                            &format!(
                                "{}:{}:{}",
                                span.name, span.start_time_unix_nano, span.end_time_unix_nano
                            )
                        )
                    ),
                };
                let mut draft = Draft::default();
                draft
                    .text("agent", labels.agent)
                    .text("model", labels.model)
                    .set("input_tokens", input.unwrap_or(Raw::Int(0)))
                    .set("output_tokens", output.unwrap_or(Raw::Int(0)))
                    .maybe("provider", labels.provider.map(Raw::Text))
                    .maybe(
                        "cache_read_tokens",
                        attributes.first_number(&CACHE_READ_KEYS),
                    )
                    .maybe(
                        "cache_write_tokens",
                        attributes.first_number(&CACHE_WRITE_KEYS),
                    )
                    .maybe("reasoning_tokens", attributes.first_number(&REASONING_KEYS))
                    .maybe("cost_usd", attributes.cost_usd())
                    // The provider's id of the call: two spans of one response (an SDK's own
                    // and an instrumentation's), or a span and the proxy, count once.
                    .maybe(
                        "response_id",
                        attributes.string("gen_ai.response.id").map(Raw::Text),
                    )
                    .maybe("trace_id", trace_id.map(Raw::Text))
                    .maybe("span_id", span_id.map(Raw::Text))
                    .maybe(
                        "ts",
                        rfc3339(span.end_time_unix_nano)
                            .or_else(|| rfc3339(span.start_time_unix_nano))
                            .map(Raw::Text),
                    )
                    .text("event_id", event_id);
                match checked(&draft, &origin, now_ms) {
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

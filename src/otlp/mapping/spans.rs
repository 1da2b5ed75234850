//! Spans with GenAI (or older `llm.usage.*`) token attributes.

use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::Span;

use super::*;

/// Operations whose usage is the sum of the calls under them (the semantic conventions'
/// agent spans, as GitHub Copilot CLI and agent frameworks emit them): the calls count, the
/// sum does not.
const AGGREGATE_OPERATIONS: [&str; 2] = ["invoke_agent", "invoke_workflow"];

/// Most spans without usage one request may leave as hints for held spans.
const MAX_HINTS: usize = 10_000;

/// Keys a parent span may name its model under: the conventions', and Codex's `model`.
const PARENT_MODEL_KEYS: [&str; 3] = ["gen_ai.response.model", "gen_ai.request.model", "model"];

/// What a span can tell the spans under it.
struct Ancestor<'a> {
    parent: &'a [u8],
    model: Option<String>,
    agent: Option<String>,
}

fn ancestor(span: &Span) -> Ancestor<'_> {
    let attributes = Attributes {
        item: &span.attributes,
        resource: &[],
    };
    Ancestor {
        parent: &span.parent_span_id,
        model: attributes.first_string(&PARENT_MODEL_KEYS),
        agent: attributes.string("gen_ai.agent.name"),
    }
}

/// The nearest ancestor in the request that names a model (and an agent), or the id of the
/// first ancestor not in the request.
fn inherited(
    start: &[u8],
    spans: &HashMap<&[u8], Ancestor<'_>>,
) -> (Option<String>, Option<String>, Option<String>) {
    let (mut model, mut agent) = (None, None);
    let mut id = start;
    for _ in 0..64 {
        if id.is_empty() {
            break;
        }
        let Some(up) = spans.get(id) else {
            let awaiting = if model.is_none() { hex(id) } else { None };
            return (model, agent, awaiting);
        };
        agent = agent.or_else(|| up.agent.clone());
        model = model.or_else(|| up.model.clone());
        if model.is_some() && agent.is_some() {
            break;
        }
        id = up.parent;
    }
    (model, agent, None)
}

/// Whether a span's input count leaves the cache out, as Anthropic's API counts it: openlit
/// passes Anthropic's figure on unchanged, and an Anthropic count the cache parts exceed
/// cannot include them. Any other provider's count must include its cache (the rule refuses
/// it otherwise).
fn exclusive_input(attributes: &Attributes<'_>, input: &Raw, cache: i64) -> bool {
    let anthropic = attributes
        .first_string(PROVIDER_KEYS)
        .is_some_and(|p| p.eq_ignore_ascii_case("anthropic"));
    let openlit = attributes
        .string("telemetry.sdk.name")
        .is_some_and(|s| s == "openlit");
    match input {
        Raw::Int(n) => anthropic && cache > 0 && (openlit || cache > *n),
        _ => false,
    }
}

fn count_of(raw: Option<&Raw>) -> i64 {
    match raw {
        Some(Raw::Int(n)) => *n,
        _ => 0,
    }
}

/// Spans carrying GenAI (or older `llm.usage.*`) token attributes become usage events; the
/// span id is the idempotency key, so a resent span counts once.
pub fn spans(request: &ExportTraceServiceRequest, defaults: &Defaults, now_ms: i64) -> Mapped {
    let mut mapped = Mapped::default();
    let empty = Vec::new();
    let by_id: HashMap<&[u8], Ancestor<'_>> = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| !s.span_id.is_empty())
        .map(|s| (&s.span_id[..], ancestor(s)))
        .collect();
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
                    if mapped.hints.len() < MAX_HINTS
                        && let Some(span_id) = hex(&span.span_id)
                    {
                        let up = &by_id[&span.span_id[..]];
                        mapped.hints.push(Hint {
                            span_id,
                            parent: hex(up.parent),
                            model: up.model.clone(),
                        });
                    }
                    continue;
                }
                if attributes
                    .string("gen_ai.operation.name")
                    .is_some_and(|op| AGGREGATE_OPERATIONS.contains(&op.as_str()))
                {
                    continue;
                }
                mapped.records.extend(usage_span(
                    span,
                    &attributes,
                    (input, output),
                    &by_id,
                    defaults,
                    now_ms,
                    &mut mapped.rejected,
                ));
            }
        }
    }
    mapped
}

/// One span with usage, as a record, or why not.
fn usage_span(
    span: &Span,
    attributes: &Attributes<'_>,
    (input, output): (Option<Raw>, Option<Raw>),
    by_id: &HashMap<&[u8], Ancestor<'_>>,
    defaults: &Defaults,
    now_ms: i64,
    rejected: &mut Vec<String>,
) -> Option<Record> {
    let trace_id = hex(&span.trace_id);
    let span_id = hex(&span.span_id);
    let origin = format!(
        "span {} ('{}')",
        span_id.as_deref().unwrap_or("without id"),
        span.name.chars().take(64).collect::<String>()
    );
    let mut labels = attributes.labels(defaults, MODEL_KEYS);
    let (model, agent, awaiting) =
        if labels.model == UNKNOWN_MODEL || attributes.string("gen_ai.agent.name").is_none() {
            inherited(&span.parent_span_id, by_id)
        } else {
            (None, None, None)
        };
    if labels.model == UNKNOWN_MODEL
        && let Some(model) = model
    {
        labels.model = model;
    }
    if attributes.string("gen_ai.agent.name").is_none()
        && let Some(agent) = agent
    {
        labels.agent = agent;
    }
    let awaiting = awaiting.filter(|_| labels.model == UNKNOWN_MODEL);
    let owner = attributes.owner(&labels.model);
    let event_id = match (&trace_id, &span_id) {
        (Some(t), Some(s)) => format!("otlp-span-{t}-{s}"),
        // No ids: the span's content is its identity, so a resend of the same span still
        // counts once.
        _ => format!(
            "otlp-span-{}",
            digest(
                &[attributes.resource, &span.attributes],
                &format!(
                    "{}:{}:{}",
                    span.name, span.start_time_unix_nano, span.end_time_unix_nano
                )
            )
        ),
    };
    let cache_read = attributes.first_number(&CACHE_READ_KEYS);
    let cache_write = attributes.first_number(&CACHE_WRITE_KEYS);
    let mut input = input.unwrap_or(Raw::Int(0));
    let cache = count_of(cache_read.as_ref()).saturating_add(count_of(cache_write.as_ref()));
    if exclusive_input(attributes, &input, cache)
        && let Raw::Int(n) = input
    {
        input = Raw::Int(n.saturating_add(cache));
    }
    let mut draft = Draft::default();
    draft
        .text("agent", labels.agent)
        .text("model", labels.model)
        .set("input_tokens", input)
        .set("output_tokens", output.unwrap_or(Raw::Int(0)))
        .maybe("provider", labels.provider.map(Raw::Text))
        .maybe("cache_read_tokens", cache_read)
        .maybe("cache_write_tokens", cache_write)
        .maybe("reasoning_tokens", attributes.first_number(&REASONING_KEYS))
        .maybe("cost_usd", attributes.cost_usd())
        .maybe(
            "accuracy",
            (attributes.cost_usd().is_some() && attributes.cost_estimated())
                .then(|| Raw::Text("estimated".into())),
        )
        // The provider's id of the call: two spans of one response (an SDK's own and an
        // instrumentation's), or a span and the proxy, count once.
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
        Ok(event) => Some(Record {
            owner,
            family: Family::Spans,
            event,
            awaiting,
        }),
        Err(problem) => {
            rejected.push(problem);
            None
        }
    }
}

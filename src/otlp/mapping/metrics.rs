//! Token and cost metric points: the GenAI histogram and counters, Claude Code's, Gemini CLI's,
//! Codex's and Cursor's; and the usage event of summed deltas.

use super::*;

/// Which usage a metric carries, by its name; `None` for every other metric.
pub(super) fn metric_family(name: &str) -> Option<Family> {
    match name {
        "gen_ai.client.token.usage" => Some(Family::GenAiMetric),
        "claude_code.token.usage" | "claude_code.cost.usage" => Some(Family::ClaudeCodeMetrics),
        "gemini_cli.token.usage" => Some(Family::GeminiCliMetrics),
        "codex.turn.token_usage" => Some(Family::CodexMetrics),
        "cursor.token.usage" | "cursor.cost.usage" => Some(Family::CursorMetrics),
        name if name.starts_with(GENAI_COUNTER_PREFIX) => Some(Family::GenAiCounters),
        _ => None,
    }
}

/// The semantic conventions' per-kind usage counters (`semantic-conventions-genai`), which
/// replace the histogram: the kind is in the name, `gen_ai.token.modality` only splits it.
const GENAI_COUNTER_PREFIX: &str = "gen_ai.client.inference.usage.";

/// The attribute that names a point's token type, by family.
pub(super) fn token_type_keys(family: Family) -> &'static [&'static str] {
    match family {
        Family::CodexMetrics => &["token_type", "codex.token_type"],
        Family::CursorMetrics => &["cursor.token.type", "type"],
        _ => &["gen_ai.token.type", "type"],
    }
}

/// Points a metric carries that are no usage of their own (a total of the others).
pub(super) fn ignored(metric: &str, token_type: Option<&str>) -> bool {
    metric == "codex.turn.token_usage" && token_type == Some("total")
}

/// What a point adds to, from its metric and its token-type attribute.
pub(super) fn parts_of(metric: &str, token_type: Option<&str>) -> Option<&'static [Part]> {
    use Part::*;
    if metric == "claude_code.cost.usage" || metric == "cursor.cost.usage" {
        return Some(&[Usd]);
    }
    if let Some(kind) = metric.strip_prefix(GENAI_COUNTER_PREFIX) {
        return Some(match kind {
            "input_tokens" => &[Input],
            "cache_read.input_tokens" => &[CacheRead],
            "cache_write.input_tokens" => &[CacheWrite],
            "output_tokens" => &[Output],
            "reasoning.output_tokens" => &[Reasoning],
            _ => return None,
        });
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
        // Codex reports the Responses API's usage: input includes the cached part, output
        // the reasoning.
        ("codex.turn.token_usage", "input") => &[Input],
        ("codex.turn.token_usage", "cached_input") => &[CacheRead],
        ("codex.turn.token_usage", "cache_write_input") => &[CacheWrite],
        ("codex.turn.token_usage", "output") => &[Output],
        ("codex.turn.token_usage", "reasoning_output") => &[Reasoning],
        // Cursor's kinds are apart from each other, as Anthropic's API and Cursor's usage
        // export count them: the cache parts add to input.
        ("cursor.token.usage", "input") => &[Input],
        ("cursor.token.usage", "output") => &[Output],
        ("cursor.token.usage", "cache_read") => &[Input, CacheRead],
        ("cursor.token.usage", "cache_creation" | "cache_write") => &[Input, CacheWrite],
        _ => return None,
    })
}

/// A metric point before mapping: attributes, start, time, value or why none, cumulative.
type RawPoint<'p> = (&'p [KeyValue], u64, u64, Result<f64, String>, bool);

/// A histogram point's tokens are its sum.
pub(super) fn histogram_point(
    attributes: &[KeyValue],
    (start_ns, time_ns): (u64, u64),
    sum: Option<f64>,
    cumulative: bool,
) -> RawPoint<'_> {
    (
        attributes,
        start_ns,
        time_ns,
        sum.ok_or_else(|| "histogram point has no sum".to_string()),
        cumulative,
    )
}

/// The points of a histogram or an exponential histogram: their tokens are the sum.
macro_rules! histogram_points {
    ($histogram:expr) => {
        $histogram
            .data_points
            .iter()
            .map(|p| {
                histogram_point(
                    &p.attributes,
                    (p.start_time_unix_nano, p.time_unix_nano),
                    p.sum,
                    $histogram.aggregation_temporality == AggregationTemporality::Cumulative as i32,
                )
            })
            .collect()
    };
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
                let raw: Vec<RawPoint<'_>> = match &metric.data {
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
                    // Two proto types with the same fields: one body for both.
                    Some(metric::Data::Histogram(histogram)) => histogram_points!(histogram),
                    Some(metric::Data::ExponentialHistogram(histogram)) => {
                        histogram_points!(histogram)
                    }
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
                    let token_type = attributes.first_string(token_type_keys(family));
                    if ignored(&metric.name, token_type.as_deref()) {
                        continue;
                    }
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
                        Family::GenAiMetric | Family::GenAiCounters => MODEL_KEYS,
                        Family::CursorMetrics => &["model", "cursor.model"],
                        _ => &["model"],
                    };
                    let labels = attributes.labels(defaults, model_keys);
                    mapped.points.push(Point {
                        owner: attributes.owner(&labels.model),
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
                        labels,
                    });
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
    let mut draft = Draft::default();
    draft
        .text("agent", labels.agent.clone())
        .text("model", labels.model.clone())
        .count("input_tokens", input as u64)
        .count("output_tokens", output as u64)
        .count("cache_read_tokens", cache_read as u64)
        .count("cache_write_tokens", cache_write as u64)
        .count("reasoning_tokens", (reasoning as u64).min(output as u64))
        .text("event_id", format!("otlp-metric-{}", digest(&[], identity)))
        .maybe("provider", labels.provider.clone().map(Raw::Text))
        .maybe("ts", rfc3339(time_ns).map(Raw::Text));
    // Claude Code reports its cost as a metric of its own: its token points carry none, so
    // the price table must not add one.
    if family == Family::ClaudeCodeMetrics {
        draft.set("cost_usd", Raw::Float(totals[5].max(0.0)));
    } else if usd > 0.0 {
        draft.set("cost_usd", Raw::Float(totals[5]));
    }
    checked(
        &draft,
        &format!("metric usage of '{}'", labels.model),
        now_ms,
    )
}

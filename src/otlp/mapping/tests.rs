//! The mapping driven with hand-built export requests.

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
            i("gen_ai.usage.cache_write.input_tokens", 100),
            s("gen_ai.response.id", "chatcmpl-42"),
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
        (
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens
        ),
        (1200, 300, 200, 100),
        "the current semconv name for cache writes is read"
    );
    assert_eq!(
        u.call_ids,
        vec!["chatcmpl-42".to_string()],
        "the response id"
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
    assert_eq!(cache_read.owner, "claude-code||s-1|claude-sonnet-4-5");
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

fn one_span(attributes: Vec<KeyValue>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(vec![s("service.name", "svc")]),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![0x11; 16],
                    span_id: vec![0x22; 8],
                    name: "chat".into(),
                    end_time_unix_nano: 1_790_000_000_000_000_000,
                    attributes,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn f(key: &str, v: f64) -> KeyValue {
    kv(key, any_value::Value::DoubleValue(v))
}

#[test]
fn opencode_input_includes_its_cache_and_the_split_comes_from_the_ai_sdk_details() {
    let request = one_span(vec![
        s("gen_ai.request.model", "claude-sonnet-4-5"),
        i("gen_ai.usage.input_tokens", 10_000),
        i("gen_ai.usage.output_tokens", 200),
        i("ai.usage.inputTokenDetails.cacheReadTokens", 9_000),
        i("ai.usage.inputTokenDetails.cacheWriteTokens", 800),
    ]);
    let mapped = spans(&request, &defaults(), 0);
    assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
    let u = usage(&mapped.records[0].event);
    assert_eq!(
        (
            u.input_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.uncached_input_tokens()
        ),
        (10_000, 9_000, 800, 200)
    );
}

#[test]
fn a_cost_the_client_reports_in_usd_is_the_events_and_one_in_another_currency_is_not() {
    let cost_of = |attributes: Vec<KeyValue>| {
        let mut all = vec![
            s("gen_ai.request.model", "gpt-4o"),
            i("gen_ai.usage.input_tokens", 100),
            i("gen_ai.usage.output_tokens", 10),
        ];
        all.extend(attributes);
        let mapped = spans(&one_span(all), &defaults(), 0);
        assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
        usage(&mapped.records[0].event).cost_usd
    };
    assert_eq!(
        cost_of(vec![
            f("gen_ai.usage.cost.amount", 0.0125),
            s("gen_ai.usage.cost.currency", "USD"),
        ]),
        Some(0.0125)
    );
    assert_eq!(
        cost_of(vec![f("gen_ai.cost.total_cost", 0.0042)]),
        Some(0.0042),
        "LiteLLM's"
    );
    assert_eq!(
        cost_of(vec![
            f("gen_ai.usage.cost.amount", 11.0),
            s("gen_ai.usage.cost.currency", "EUR"),
        ]),
        None,
        "priced from the table instead"
    );
    assert_eq!(cost_of(vec![]), None);
}

#[test]
fn codex_s_completed_response_event_is_one_call_and_its_other_sse_events_are_nothing() {
    let event = |kind: &str| LogRecord {
        time_unix_nano: 1_790_000_000_000_000_000,
        attributes: vec![
            s("event.name", "codex.sse_event"),
            s("event.kind", kind),
            s("model", "gpt-5-codex"),
            i("input_token_count", 12_000),
            i("cached_token_count", 10_000),
            i("output_token_count", 900),
            i("reasoning_token_count", 600),
        ],
        ..Default::default()
    };
    let request = logs_request(
        "codex_cli_rs",
        vec![
            event("response.created"),
            event("response.output_text.delta"),
            event("response.completed"),
        ],
    );
    let mapped = logs(&request, &defaults(), 0);
    assert!(mapped.rejected.is_empty(), "{:?}", mapped.rejected);
    assert_eq!(mapped.records.len(), 1, "only the completed response");
    assert_eq!(mapped.records[0].family, Family::CodexLogs);
    let u = usage(&mapped.records[0].event);
    assert_eq!(
        (
            u.model.as_str(),
            u.input_tokens,
            u.cache_read_tokens,
            u.output_tokens,
            u.reasoning_tokens,
            u.uncached_input_tokens()
        ),
        ("gpt-5-codex", 12_000, 10_000, 900, 600, 2_000)
    );
}

fn trace_request(
    resource_attributes: Vec<KeyValue>,
    spans_list: Vec<Span>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(resource_attributes),
            scope_spans: vec![ScopeSpans {
                spans: spans_list,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn a_codex_usage_span_takes_the_model_of_its_turn_span_or_waits_for_it() {
    let turn = Span {
        span_id: vec![1; 8],
        trace_id: vec![9; 16],
        name: "session_task.turn".into(),
        attributes: vec![s("model", "gpt-5.4")],
        ..Default::default()
    };
    let responses = Span {
        span_id: vec![2; 8],
        parent_span_id: vec![1; 8],
        trace_id: vec![9; 16],
        name: "handle_responses".into(),
        attributes: vec![
            i("gen_ai.usage.input_tokens", 1_000),
            i("gen_ai.usage.cache_read.input_tokens", 800),
            i("gen_ai.usage.output_tokens", 50),
        ],
        ..Default::default()
    };
    let together = spans(
        &trace_request(
            vec![s("service.name", "codex")],
            vec![responses.clone(), turn],
        ),
        &defaults(),
        0,
    );
    assert_eq!(together.records.len(), 1);
    assert_eq!(usage(&together.records[0].event).model, "gpt-5.4");
    assert_eq!(together.records[0].awaiting, None);
    assert!(together.records[0].owner.ends_with("|gpt-5.4"));
    // The turn ends later, in a later export: the usage span waits for it.
    let alone = spans(
        &trace_request(vec![s("service.name", "codex")], vec![responses]),
        &defaults(),
        0,
    );
    assert_eq!(usage(&alone.records[0].event).model, UNKNOWN_MODEL);
    assert_eq!(
        alone.records[0].awaiting.as_deref(),
        Some("0101010101010101")
    );
}

#[test]
fn agent_spans_sums_are_not_counted_and_their_agent_name_reaches_the_calls() {
    let agent = Span {
        span_id: vec![1; 8],
        trace_id: vec![9; 16],
        name: "invoke_agent copilot".into(),
        attributes: vec![
            s("gen_ai.operation.name", "invoke_agent"),
            s("gen_ai.agent.name", "copilot-cli"),
            i("gen_ai.usage.input_tokens", 3_000),
            i("gen_ai.usage.output_tokens", 300),
        ],
        ..Default::default()
    };
    let chat = |id: u8, input: i64| Span {
        span_id: vec![id; 8],
        parent_span_id: vec![1; 8],
        trace_id: vec![9; 16],
        name: "chat claude-sonnet-4.5".into(),
        attributes: vec![
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", "claude-sonnet-4.5"),
            i("gen_ai.usage.input_tokens", input),
            i("gen_ai.usage.cache_read.input_tokens", input / 2),
            i("gen_ai.usage.output_tokens", 150),
        ],
        ..Default::default()
    };
    let mapped = spans(
        &trace_request(
            vec![s("service.name", "github-copilot")],
            vec![chat(2, 1_000), chat(3, 2_000), agent],
        ),
        &defaults(),
        0,
    );
    let inputs: Vec<(u64, u64, String)> = mapped
        .records
        .iter()
        .map(|r| {
            let u = usage(&r.event);
            (u.input_tokens, u.cache_read_tokens, u.agent.clone())
        })
        .collect();
    assert_eq!(
        inputs,
        vec![
            (1_000, 500, "copilot-cli".to_string()),
            (2_000, 1_000, "copilot-cli".to_string())
        ]
    );
}

#[test]
fn openlit_s_exclusive_anthropic_input_is_made_inclusive() {
    let span = |attributes: Vec<KeyValue>| Span {
        span_id: vec![4; 8],
        trace_id: vec![5; 16],
        attributes,
        ..Default::default()
    };
    let counts = || {
        vec![
            s("gen_ai.system", "anthropic"),
            s("gen_ai.request.model", "claude-sonnet-4-5"),
            i("gen_ai.usage.input_tokens", 200),
            i("gen_ai.usage.cache_read_input_tokens", 150),
            i("gen_ai.usage.cache_creation_input_tokens", 30),
            i("gen_ai.usage.output_tokens", 10),
        ]
    };
    // openlit passes Anthropic's figure on: 200 uncached, though the cache fits inside it.
    let openlit = spans(
        &trace_request(
            vec![s("telemetry.sdk.name", "openlit")],
            vec![span(counts())],
        ),
        &defaults(),
        0,
    );
    assert_eq!(usage(&openlit.records[0].event).input_tokens, 380);
    // Another SDK's Anthropic input is taken as inclusive when the cache fits in it…
    let other = spans(&trace_request(vec![], vec![span(counts())]), &defaults(), 0);
    assert_eq!(usage(&other.records[0].event).input_tokens, 200);
    // …and as exclusive when the cache exceeds it.
    let mut big_cache = counts();
    big_cache[3] = i("gen_ai.usage.cache_read_input_tokens", 500);
    let exclusive = spans(
        &trace_request(vec![], vec![span(big_cache)]),
        &defaults(),
        0,
    );
    assert_eq!(usage(&exclusive.records[0].event).input_tokens, 730);
}

fn sums(name: &str, points: Vec<(Vec<KeyValue>, i64)>) -> Metric {
    Metric {
        name: name.into(),
        data: Some(metric::Data::Sum(Sum {
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
            data_points: points
                .into_iter()
                .map(|(attributes, v)| NumberDataPoint {
                    attributes,
                    time_unix_nano: 1_790_000_000_000_000_000,
                    value: Some(number_data_point::Value::AsInt(v)),
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    }
}

fn metrics_request(service: &str, metrics_list: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(vec![s("service.name", service)]),
            scope_metrics: vec![ScopeMetrics {
                metrics: metrics_list,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn semconv_counters_codex_and_cursor_metrics_map_to_their_parts() {
    let model = || s("gen_ai.request.model", "gpt-5");
    let semconv = metrics(
        &metrics_request(
            "svc",
            vec![
                sums(
                    "gen_ai.client.inference.usage.input_tokens",
                    vec![(vec![model()], 1_000)],
                ),
                sums(
                    "gen_ai.client.inference.usage.cache_read.input_tokens",
                    vec![(vec![model()], 600)],
                ),
                sums(
                    "gen_ai.client.inference.usage.reasoning.output_tokens",
                    vec![(vec![model()], 20)],
                ),
                sums(
                    "gen_ai.client.inference.usage.something_else",
                    vec![(vec![model()], 5)],
                ),
            ],
        ),
        &defaults(),
    );
    let parts: Vec<(&[Part], Family)> =
        semconv.points.iter().map(|p| (p.parts, p.family)).collect();
    assert_eq!(
        parts,
        vec![
            (&[Part::Input][..], Family::GenAiCounters),
            (&[Part::CacheRead][..], Family::GenAiCounters),
            (&[Part::Reasoning][..], Family::GenAiCounters),
        ]
    );
    assert_eq!(
        semconv.rejected.len(),
        1,
        "an unknown kind is named: {:?}",
        semconv.rejected
    );
    let kind = |k: &str, t: &str| vec![s(k, t), s("model", "gpt-5.4")];
    let codex = metrics(
        &metrics_request(
            "codex",
            vec![sums(
                "codex.turn.token_usage",
                vec![
                    (kind("token_type", "input"), 1_000),
                    (kind("token_type", "cached_input"), 900),
                    (kind("token_type", "reasoning_output"), 40),
                    (kind("token_type", "total"), 1_100),
                ],
            )],
        ),
        &defaults(),
    );
    assert!(codex.rejected.is_empty(), "{:?}", codex.rejected);
    assert_eq!(codex.points.len(), 3, "the total is no usage of its own");
    assert_eq!(codex.points[0].labels.model, "gpt-5.4");
    let cursor = metrics(
        &metrics_request(
            "cursor",
            vec![sums(
                "cursor.token.usage",
                vec![
                    (kind("cursor.token.type", "cache_read"), 500),
                    (kind("cursor.token.type", "cache_creation"), 50),
                ],
            )],
        ),
        &defaults(),
    );
    let parts: Vec<&[Part]> = cursor.points.iter().map(|p| p.parts).collect();
    assert_eq!(
        parts,
        vec![
            &[Part::Input, Part::CacheRead][..],
            &[Part::Input, Part::CacheWrite][..]
        ]
    );
}

#[test]
fn cursor_api_request_logs_count_once_by_their_event_id() {
    let record = |time: u64| LogRecord {
        time_unix_nano: time,
        event_name: "cursor.api.request".into(),
        attributes: vec![
            s("cursor.event.id", "evt-42"),
            s("model", "claude-sonnet-4-5"),
            s("input_tokens", "100"),
            s("cache_read_tokens", "900"),
            s("cache_creation_tokens", "50"),
            s("output_tokens", "70"),
        ],
        ..Default::default()
    };
    let first = logs(
        &logs_request("cursor", vec![record(1_790_000_000_000_000_000)]),
        &defaults(),
        0,
    );
    let resent = logs(
        &logs_request("cursor", vec![record(1_790_000_000_500_000_000)]),
        &defaults(),
        0,
    );
    let u = usage(&first.records[0].event);
    assert_eq!(
        (
            u.input_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.output_tokens
        ),
        (1_050, 900, 50, 70)
    );
    assert_eq!(first.records[0].family, Family::CursorLogs);
    assert_eq!(
        first.records[0].event.event_id,
        resent.records[0].event.event_id
    );
}

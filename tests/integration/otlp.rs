//! The OTLP receiver end to end: the official OpenTelemetry Python SDK and exporter against a
//! live daemon, a Claude Code-shaped metrics and logs export tripping a budget, cumulative
//! streams across a restart, and malformed bodies.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{Value, json};

use crate::util::{Daemon, otel_python, wait_for};

const SETTLE: Duration = Duration::from_secs(20);
/// `costmeter exec`'s exit status when a budget stopped the command.
const EXIT_BUDGET_KILLED: i32 = 86;

/// Longest wait for histogram usage held for a richer twin (10 s) to be counted.
const HELD: Duration = Duration::from_secs(30);

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

fn series(daemon: &Daemon, name: &str, labels: &[(&str, &str)]) -> f64 {
    daemon.scrape().value(name, labels).unwrap_or(0.0)
}

fn tokens(daemon: &Daemon, agent: &str, model: &str, kind: &str) -> f64 {
    series(
        daemon,
        "haios_tokens_total",
        &[("agent", agent), ("model", model), ("kind", kind)],
    )
}

fn otlp_events(daemon: &Daemon, kind: &str, result: &str) -> f64 {
    series(
        daemon,
        "haios_events_total",
        &[("source", "otlp"), ("type", kind), ("result", result)],
    )
}

fn gpt_4o_spend(daemon: &Daemon, agent: &str) -> f64 {
    series(
        daemon,
        "haios_usd_spend_total",
        &[("agent", agent), ("model", "gpt-4o")],
    )
}

/// Runs the GenAI-instrumented Python agent in `mode` against the daemon.
fn run_python_agent(daemon: &Daemon, mode: &str) -> bool {
    let Some(python) = otel_python() else {
        return false;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp/genai_agent.py");
    let output = Command::new(python)
        .arg(script)
        .arg(mode)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", daemon.url("/v1/otlp"))
        .env("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        .output()
        .expect("python runs");
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("exported"),
        "the Python agent failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

#[test]
fn the_python_sdk_s_genai_spans_and_histogram_meter_exact_totals_once() {
    let daemon = Daemon::start("");
    if !run_python_agent(&daemon, "spans+histogram") {
        return;
    }
    let agent = "py-agent-spans+histogram";
    // Three calls: 6,000 input of which 500 cache reads, 600 output (tests/otlp/genai_agent.py).
    assert_eq!(tokens(&daemon, agent, "gpt-4o", "input"), 5_500.0);
    assert_eq!(tokens(&daemon, agent, "gpt-4o", "cache_read"), 500.0);
    assert_eq!(tokens(&daemon, agent, "gpt-4o", "output"), 600.0);
    // gpt-4o: $2.50 input, $1.25 cache read, $10 output per million tokens.
    let usd = gpt_4o_spend(&daemon, agent);
    assert!(
        (usd - (5_500.0 * 2.5 + 500.0 * 1.25 + 600.0 * 10.0) / 1e6).abs() < 1e-9,
        "{usd}"
    );
    assert_eq!(otlp_events(&daemon, "llm_usage", "accepted"), 3.0);
    assert!(
        otlp_events(&daemon, "llm_usage", "duplicate") >= 1.0,
        "the histogram's points were the spans' usage again and counted as duplicates"
    );
}

#[test]
fn opencode_s_cache_split_and_litellm_s_own_cost_are_read_from_python_sdk_spans() {
    let daemon = Daemon::start("");
    if !run_python_agent(&daemon, "opencode+litellm") {
        return;
    }
    let agent = "py-agent-opencode+litellm";
    let model = "claude-sonnet-4-5";
    // 10,000 input of which 9,000 cache reads and 800 cache writes (tests/otlp/genai_agent.py).
    assert_eq!(tokens(&daemon, agent, model, "input"), 200.0);
    assert_eq!(tokens(&daemon, agent, model, "cache_read"), 9_000.0);
    assert_eq!(tokens(&daemon, agent, model, "cache_write"), 800.0);
    assert_eq!(tokens(&daemon, agent, model, "output"), 200.0);
    let table = costmeter::pricing::PriceTable::load(None, &Default::default()).expect("prices");
    let price = table.lookup(model).expect("priced");
    let expected = (200.0 * price.input
        + 9_000.0 * price.cache_read.expect("cache read price")
        + 800.0 * price.cache_write.expect("cache write price")
        + 200.0 * price.output)
        / 1e6;
    let usd = series(
        &daemon,
        "haios_usd_spend_total",
        &[("agent", agent), ("model", model)],
    );
    assert!((usd - expected).abs() < 1e-9, "{usd} against {expected}");
    // LiteLLM's cost is the event's, not the table's ($0.0035 for these tokens).
    assert!((gpt_4o_spend(&daemon, agent) - 0.0123).abs() < 1e-12);
    assert_eq!(tokens(&daemon, agent, "gpt-4o", "input"), 1_000.0);
    // Provenance: LiteLLM's figure is its own reckoning (estimated); opencode's was priced.
    let by = |confidence: &str| {
        (
            series(
                &daemon,
                "haios_cost_events_total",
                &[("confidence", confidence)],
            ),
            series(
                &daemon,
                "haios_cost_usd_total",
                &[("confidence", confidence)],
            ),
        )
    };
    assert_eq!(by("estimated").0, 1.0);
    assert!((by("estimated").1 - 0.0123).abs() < 1e-12);
    assert_eq!(by("priced").0, 1.0);
    assert!((by("priced").1 - expected).abs() < 1e-9);
}

#[test]
fn every_usage_event_says_how_its_usd_was_obtained_in_metrics_and_the_report() {
    let daemon = Daemon::start("");
    let usage = |id: &str, model: &str, extra: Value| {
        let mut event = json!({"type": "llm_usage", "event_id": id, "agent": "a", "model": model,
                               "input_tokens": 1_000, "output_tokens": 100});
        if let (Some(e), Some(x)) = (event.as_object_mut(), extra.as_object()) {
            e.extend(x.clone());
        }
        event
    };
    daemon.post_events(&json!([
        usage("reported", "gpt-4o", json!({"cost_usd": 0.5})),
        usage("priced", "gpt-4o", json!({})),
        usage("estimated", "gpt-4o", json!({"accuracy": "estimated"})),
        usage(
            "unknown",
            "no-such-model-x",
            json!({"accuracy": "estimated"})
        ),
    ]));
    let priced = (1_000.0 * 2.5 + 100.0 * 10.0) / 1e6;
    for (confidence, usd) in [
        ("exact", 0.5),
        ("priced", priced),
        ("estimated", priced),
        ("unknown_model", 0.0),
    ] {
        assert_eq!(
            series(
                &daemon,
                "haios_cost_events_total",
                &[("confidence", confidence)]
            ),
            1.0,
            "{confidence}"
        );
        let got = series(
            &daemon,
            "haios_cost_usd_total",
            &[("confidence", confidence)],
        );
        assert!((got - usd).abs() < 1e-12, "{confidence}: {got}");
    }
    let (status, _, body) = daemon.get("/v1/report?window=1h", None);
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).expect("JSON report");
    let lines: Vec<(String, u64)> = report["cost_confidence"]
        .as_array()
        .expect("cost_confidence")
        .iter()
        .map(|l| {
            (
                l["confidence"].as_str().unwrap_or("").to_string(),
                l["events"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        lines,
        ["estimated", "exact", "priced", "unknown_model"]
            .map(|c| (c.to_string(), 1))
            .to_vec()
    );
    let bad = daemon.post("/v1/events", "application/json", br#"{"type":"llm_usage","agent":"a","model":"m","input_tokens":1,"output_tokens":1,"accuracy":"roughly"}"#);
    assert_eq!(bad.0, 400);
    assert!(bad.1.to_string().contains("accuracy"), "{}", bad.1);
}

#[test]
fn codex_s_completed_response_log_from_the_python_sdk_is_one_priced_call() {
    let daemon = Daemon::start("");
    if !run_python_agent(&daemon, "codex-logs") {
        return;
    }
    let agent = "py-agent-codex-logs";
    // 12,000 input of which 10,000 cached, 900 output of which 600 reasoning.
    assert_eq!(tokens(&daemon, agent, "gpt-5", "input"), 2_000.0);
    assert_eq!(tokens(&daemon, agent, "gpt-5", "cache_read"), 10_000.0);
    assert_eq!(tokens(&daemon, agent, "gpt-5", "output"), 900.0);
    assert_eq!(
        otlp_events(&daemon, "llm_usage", "accepted"),
        1.0,
        "one call, not one per server-sent event"
    );
    let table = costmeter::pricing::PriceTable::load(None, &Default::default()).expect("prices");
    let price = table.lookup("gpt-5").expect("priced");
    let expected = (2_000.0 * price.input
        + 10_000.0 * price.cache_read.expect("cache read price")
        + 900.0 * price.output)
        / 1e6;
    let usd = series(
        &daemon,
        "haios_usd_spend_total",
        &[("agent", agent), ("model", "gpt-5")],
    );
    assert!((usd - expected).abs() < 1e-9, "{usd} against {expected}");
}

#[test]
fn a_cumulative_histogram_exported_twice_counts_once() {
    let daemon = Daemon::start("");
    if !run_python_agent(&daemon, "histogram-twice") {
        return;
    }
    let agent = "py-agent-histogram-twice";
    // Histogram usage waits (10 s) for spans of the same calls that might follow.
    wait_for("the held histogram usage", HELD, || {
        (tokens(&daemon, agent, "gpt-4o", "input") > 0.0).then_some(())
    });
    assert_eq!(tokens(&daemon, agent, "gpt-4o", "input"), 6_000.0);
    assert_eq!(tokens(&daemon, agent, "gpt-4o", "output"), 600.0);
    let usd = gpt_4o_spend(&daemon, agent);
    assert!(
        (usd - (6_000.0 * 2.5 + 600.0 * 10.0) / 1e6).abs() < 1e-9,
        "{usd}"
    );
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// One Claude Code metrics export (delta temporality, its default) for a session: token
/// counts by type and the cost it computed, as its monitoring docs name them.
fn claude_code_metrics(session: &str, tokens: [(&str, i64); 4], cost: f64) -> Vec<u8> {
    let now = now_ns();
    let point = |kind: Option<&str>, value: number_data_point::Value| NumberDataPoint {
        attributes: [
            Some(kv("session.id", session)),
            Some(kv("model", "claude-sonnet-4-5-20250929")),
            Some(kv("terminal.type", "xterm")),
            kind.map(|k| kv("type", k)),
        ]
        .into_iter()
        .flatten()
        .collect(),
        start_time_unix_nano: now - 60_000_000_000,
        time_unix_nano: now,
        value: Some(value),
        ..Default::default()
    };
    let sum = |name: &str, unit: &str, points: Vec<NumberDataPoint>| Metric {
        name: name.to_string(),
        unit: unit.to_string(),
        data: Some(metric::Data::Sum(Sum {
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
            data_points: points,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "claude-code"),
                    kv("service.version", "2.0.0"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    sum(
                        "claude_code.token.usage",
                        "tokens",
                        tokens
                            .iter()
                            .map(|(kind, n)| point(Some(kind), number_data_point::Value::AsInt(*n)))
                            .collect(),
                    ),
                    sum(
                        "claude_code.cost.usage",
                        "USD",
                        vec![point(None, number_data_point::Value::AsDouble(cost))],
                    ),
                    sum(
                        "claude_code.session.count",
                        "count",
                        vec![point(None, number_data_point::Value::AsInt(1))],
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// One Claude Code `api_request` log event in OTLP/JSON, as `http/json` exporters send it.
fn claude_code_api_request(session: &str, tokens: [i64; 4], cost: &str) -> Vec<u8> {
    claude_code_api_request_at(session, tokens, cost, now_ns())
}

/// [`claude_code_api_request`] dated `time_ns`.
fn claude_code_api_request_at(
    session: &str,
    tokens: [i64; 4],
    cost: &str,
    time_ns: u64,
) -> Vec<u8> {
    let attribute = |k: &str, v: String| json!({"key": k, "value": {"stringValue": v}});
    let [input, output, cache_read, cache_creation] = tokens;
    json!({"resourceLogs": [{
        "resource": {"attributes": [attribute("service.name", "claude-code".into())]},
        "scopeLogs": [{
            "scope": {"name": "com.anthropic.claude_code.events", "version": "2.0.0"},
            "logRecords": [{
                "timeUnixNano": time_ns.to_string(),
                "body": {"stringValue": "claude_code.api_request"},
                "attributes": [
                    attribute("event.name", "api_request".into()),
                    attribute("session.id", session.into()),
                    attribute("model", "claude-sonnet-4-5-20250929".into()),
                    attribute("cost_usd", cost.into()),
                    attribute("duration_ms", "5120".into()),
                    attribute("input_tokens", input.to_string()),
                    attribute("output_tokens", output.to_string()),
                    attribute("cache_read_tokens", cache_read.to_string()),
                    attribute("cache_creation_tokens", cache_creation.to_string()),
                ]
            }]
        }]
    }]})
    .to_string()
    .into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn post_protobuf_gzip(daemon: &Daemon, path: &str, body: &[u8]) -> u16 {
    let (status, _, _) = daemon.post_raw(
        path,
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(body),
    );
    status
}

fn post_json(daemon: &Daemon, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, _, answer) = daemon.post_raw(path, &[("Content-Type", "application/json")], body);
    (
        status,
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    )
}

#[test]
fn a_claude_code_export_moves_spend_and_trips_the_usd_budget() {
    let mut daemon = Daemon::builder()
        .config("[budgets]\nusd = 0.05\n[enforcement]\ngrace = \"5s\"\n")
        .exec(&["sh", "-c", "while :; do sleep 0.05; done"])
        .start();
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    let model = "claude-sonnet-4-5-20250929";
    // Session 1 over metrics: Claude Code's cost for these tokens at list price is
    // 2,000×$3 + 1,000×$15 + 10,000×$0.30 + 1,000×$3.75 per million = $0.02775.
    let first = claude_code_metrics(
        "s-1",
        [
            ("input", 2_000),
            ("output", 1_000),
            ("cacheRead", 10_000),
            ("cacheCreation", 1_000),
        ],
        0.02775,
    );
    assert_eq!(post_protobuf_gzip(&daemon, "/v1/metrics", &first), 200);
    assert_eq!(tokens(&daemon, "claude-code", model, "input"), 2_000.0);
    assert_eq!(
        tokens(&daemon, "claude-code", model, "cache_read"),
        10_000.0
    );
    assert_eq!(
        tokens(&daemon, "claude-code", model, "cache_write"),
        1_000.0
    );
    assert_eq!(tokens(&daemon, "claude-code", model, "output"), 1_000.0);
    let spend = |d: &Daemon| {
        series(
            d,
            "haios_usd_spend_total",
            &[("agent", "claude-code"), ("model", model)],
        )
    };
    assert!(
        (spend(&daemon) - 0.02775).abs() < 1e-12,
        "the agent's own cost is exact"
    );

    // The same request as a log event of the same session, dated before the metrics were
    // collected (as Claude Code records both at the answer): already metered by its metrics.
    let (status, answer) = post_json(
        &daemon,
        "/v1/logs",
        &claude_code_api_request_at(
            "s-1",
            [2_000, 1_000, 10_000, 1_000],
            "0.02775",
            now_ns() - 30_000_000_000,
        ),
    );
    assert_eq!((status, answer), (200, json!({})));
    assert!((spend(&daemon) - 0.02775).abs() < 1e-12, "counted once");
    assert_eq!(otlp_events(&daemon, "llm_usage", "duplicate"), 1.0);

    // Session 2 exports only logs: they meter it.
    let (status, _) = post_json(
        &daemon,
        "/v1/otlp/v1/logs",
        &claude_code_api_request("s-2", [100, 200, 0, 0], "0.01"),
    );
    assert_eq!(status, 200);
    assert!((spend(&daemon) - 0.03775).abs() < 1e-12);
    assert_eq!(
        series(
            &daemon,
            "haios_budget_state",
            &[("budget", "lifetime-usd"), ("resource", "usd")]
        ),
        0.0
    );

    // The next call of session 1 crosses $0.05. Its log event meters it now (the richer
    // family took the session over); its metrics, exported after, are the same call again.
    let (status, _) = post_json(
        &daemon,
        "/v1/otlp/v1/logs",
        &claude_code_api_request("s-1", [1_000, 500, 0, 0], "0.015"),
    );
    assert_eq!(status, 200);
    let second = claude_code_metrics(
        "s-1",
        [
            ("input", 1_000),
            ("output", 500),
            ("cacheRead", 0),
            ("cacheCreation", 0),
        ],
        0.015,
    );
    assert_eq!(
        post_protobuf_gzip(&daemon, "/v1/otlp/v1/metrics", &second),
        200
    );
    let status = daemon.wait_exit(SETTLE);
    assert_eq!(status.code(), Some(EXIT_BUDGET_KILLED));
    assert_eq!(daemon.log_count("\"event\":\"BUDGET_EXCEEDED\""), 1);
}

/// A `gen_ai.client.token.usage` histogram point in OTLP/JSON, cumulative.
fn cumulative_histogram(start_ns: u64, time_ns: u64, sum: u64) -> Vec<u8> {
    json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "restarting"}}]},
        "scopeMetrics": [{"metrics": [{
            "name": "gen_ai.client.token.usage",
            "histogram": {
                "aggregationTemporality": 2,
                "dataPoints": [{
                    "startTimeUnixNano": start_ns.to_string(),
                    "timeUnixNano": time_ns.to_string(),
                    "count": "1",
                    "sum": sum,
                    "attributes": [
                        {"key": "gen_ai.token.type", "value": {"stringValue": "input"}},
                        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}}
                    ]
                }]
            }
        }]}]
    }]})
    .to_string()
    .into_bytes()
}

#[test]
fn cumulative_streams_survive_a_costmeter_restart_and_detect_exporter_restarts() {
    let daemon = Daemon::start("");
    let start = now_ns();
    let post = |d: &Daemon, body: Vec<u8>| {
        let (status, answer) = post_json(d, "/v1/otlp/v1/metrics", &body);
        assert_eq!(status, 200, "{answer}");
    };
    post(&daemon, cumulative_histogram(start, start + 1_000, 100));
    wait_for("the held histogram usage", HELD, || {
        (tokens(&daemon, "restarting", "gpt-4o-mini", "input") > 0.0).then_some(())
    });
    assert_eq!(tokens(&daemon, "restarting", "gpt-4o-mini", "input"), 100.0);
    let daemon = daemon.restart(libc::SIGKILL);
    post(&daemon, cumulative_histogram(start, start + 2_000, 150));
    assert_eq!(
        tokens(&daemon, "restarting", "gpt-4o-mini", "input"),
        150.0,
        "the running sum continued from 100, remembered across the restart"
    );
    // The exporter restarted: a new start time, a sum from zero.
    post(
        &daemon,
        cumulative_histogram(start + 5_000, start + 6_000, 20),
    );
    assert_eq!(tokens(&daemon, "restarting", "gpt-4o-mini", "input"), 170.0);
}

#[test]
fn malformed_otlp_bodies_get_400_with_a_message_and_the_daemon_carries_on() {
    let daemon = Daemon::start("");
    let (status, content_type, body) = daemon.post_raw(
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &[0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01],
    );
    assert_eq!(status, 400);
    assert_eq!(content_type, "application/x-protobuf");
    let message = String::from_utf8_lossy(&body);
    assert!(
        message.contains("not a valid OTLP protobuf ExportTraceServiceRequest"),
        "{message}"
    );

    let (status, answer) = post_json(&daemon, "/v1/otlp/v1/metrics", b"{\"resourceMetrics\": [");
    assert_eq!(status, 400);
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a valid OTLP JSON ExportMetricsServiceRequest")),
        "{answer}"
    );
    let (status, answer) = post_json(&daemon, "/v1/logs", b"{\"resourceLogs\": 5}");
    assert_eq!(status, 400, "{answer}");

    let (status, _, _) = daemon.post_raw(
        "/v1/traces",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        b"not gzip at all",
    );
    assert_eq!(status, 400);
    let (status, _, body) =
        daemon.post_raw("/v1/traces", &[("Content-Type", "text/plain")], b"hello");
    assert_eq!(status, 415);
    assert!(String::from_utf8_lossy(&body).contains("application/x-protobuf"));

    // A span whose cache reads exceed its input (Anthropic-style exclusive counts) is refused
    // alone, in a partial success that names the rule; the request's other span counts.
    let span = |id: &str, input: u64, cache: u64| {
        json!({
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": id, "name": "chat",
            "endTimeUnixNano": now_ns().to_string(),
            "attributes": [
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": input.to_string()}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "7"}},
                {"key": "gen_ai.usage.cache_read.input_tokens", "value": {"intValue": cache.to_string()}}
            ]
        })
    };
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-agent"}}]},
        "scopeSpans": [{"spans": [span("00f067aa0ba902b7", 100, 500), span("00f067aa0ba902b8", 100, 40)]}]
    }]});
    let (status, answer) = post_json(&daemon, "/v1/traces", body.to_string().as_bytes());
    assert_eq!(status, 200);
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1", "{answer}");
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("span 00f067aa0ba902b7") && m.contains("cache")),
        "{answer}"
    );
    assert_eq!(tokens(&daemon, "json-agent", "gpt-4o", "cache_read"), 40.0);
    assert_eq!(otlp_events(&daemon, "unknown", "rejected"), 5.0);
    assert_eq!(otlp_events(&daemon, "llm_usage", "rejected"), 1.0);
    assert_eq!(daemon.get("/healthz", None).0, 200);
}

#[test]
fn the_grpc_receiver_meters_gzip_exports_and_counts_a_resend_once() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let port = crate::util::free_port();
    let daemon = Daemon::start(&format!("[otlp]\ngrpc_listen = \"127.0.0.1:{port}\"\n"));
    crate::util::wait_for("the gRPC receiver", SETTLE, || {
        (daemon.log_count("listening for OTLP/gRPC") > 0).then_some(())
    });
    let int = |key: &str, value: i64| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    };
    let span = |id: u8| Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        name: "chat".into(),
        end_time_unix_nano: now_ns(),
        attributes: vec![
            kv("gen_ai.request.model", "gpt-4o-mini"),
            int("gen_ai.usage.input_tokens", 1_000),
            int("gen_ai.usage.output_tokens", 200),
        ],
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "grpc-agent")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span(1), span(2)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connects")
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        for _ in 0..2 {
            let answer = client
                .export(request.clone())
                .await
                .expect("exported")
                .into_inner();
            assert_eq!(answer.partial_success, None);
        }
    });
    assert_eq!(
        tokens(&daemon, "grpc-agent", "gpt-4o-mini", "input"),
        2_000.0
    );
    assert_eq!(
        tokens(&daemon, "grpc-agent", "gpt-4o-mini", "output"),
        400.0
    );
    assert_eq!(otlp_events(&daemon, "llm_usage", "accepted"), 2.0);
    assert_eq!(
        otlp_events(&daemon, "llm_usage", "duplicate"),
        2.0,
        "the resend"
    );
}

/// An export of `spans` GenAI spans for `agent`, each with 100 input and 10 output tokens and
/// a long attribute that is not usage, as agents attach tool output to their spans.
fn big_trace_export(
    agent: &str,
    spans: u16,
    seed: u8,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let int = |key: &str, value: i64| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    };
    let filler = "x".repeat(2_500);
    let spans = (0..spans)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            Span {
                trace_id: vec![seed; 16],
                span_id: vec![seed, hi, lo, 1, 2, 3, 4, 5],
                name: "chat".into(),
                end_time_unix_nano: now_ns(),
                attributes: vec![
                    kv("gen_ai.request.model", "gpt-4o-mini"),
                    int("gen_ai.usage.input_tokens", 100),
                    int("gen_ai.usage.output_tokens", 10),
                    kv("tool.output", &filler),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", agent)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn a_multi_mib_export_is_metered_in_full_in_every_encoding() {
    let daemon = Daemon::start("");
    for (seed, (agent, content_type, gzipped)) in [
        ("big-proto", "application/x-protobuf", false),
        ("big-proto-gzip", "application/x-protobuf", true),
        ("big-json", "application/json", false),
        ("big-json-gzip", "application/json", true),
    ]
    .into_iter()
    .enumerate()
    {
        let request = big_trace_export(agent, 1_200, u8::try_from(seed + 1).expect("seed"));
        let body = if content_type == "application/json" {
            serde_json::to_vec(&request).expect("OTLP/JSON")
        } else {
            request.encode_to_vec()
        };
        assert!(body.len() > 3_000_000, "{agent}: {} bytes", body.len());
        let body = if gzipped { gzip(&body) } else { body };
        let mut headers = vec![("Content-Type", content_type)];
        if gzipped {
            headers.push(("Content-Encoding", "gzip"));
        }
        let (status, _, answer) = daemon.post_raw("/v1/traces", &headers, &body);
        assert_eq!(status, 200, "{agent}: {}", String::from_utf8_lossy(&answer));
        assert_eq!(
            tokens(&daemon, agent, "gpt-4o-mini", "input"),
            120_000.0,
            "{agent}"
        );
        assert_eq!(
            tokens(&daemon, agent, "gpt-4o-mini", "output"),
            12_000.0,
            "{agent}"
        );
    }
    assert_eq!(otlp_events(&daemon, "llm_usage", "accepted"), 4_800.0);
}

#[test]
fn a_body_over_the_cap_is_counted_logged_red_in_doctor_and_its_twin_counts() {
    let daemon = Daemon::start("[otlp]\nmax_body_bytes = 65536\n");
    // Claude Code's log event claims the session for the logs family.
    let small = claude_code_api_request("s-413", [1000, 100, 0, 0], "0.01");
    assert_eq!(post_json(&daemon, "/v1/logs", &small).0, 200);
    // The next logs batch is over the cap: the exporter drops it.
    let mut large = claude_code_api_request("s-413", [3000, 300, 0, 0], "0.03");
    large.extend(std::iter::repeat_n(b' ', 70_000));
    let (status, answer) = post_json(&daemon, "/v1/logs", &large);
    assert_eq!(status, 413, "{answer}");
    // Its twin in the metrics signal is counted, not discarded as a duplicate.
    let metrics = claude_code_metrics(
        "s-413",
        [
            ("input", 3000),
            ("output", 300),
            ("cacheRead", 0),
            ("cacheCreation", 0),
        ],
        0.03,
    );
    assert_eq!(post_protobuf_gzip(&daemon, "/v1/metrics", &metrics), 200);
    assert_eq!(otlp_events(&daemon, "llm_usage", "accepted"), 2.0);
    assert_eq!(otlp_events(&daemon, "llm_usage", "duplicate"), 0.0);

    // /v1/events has its own cap, counted the same way.
    let status = crate::util::post_oversize(&daemon, "/v1/events", 2 * 1024 * 1024);
    // The answer may be lost to the reset of a connection closed with unread bytes; the
    // counter below is the proof.
    assert!(status.is_empty() || status.contains("413"), "{status}");
    for route in ["otlp_logs", "events"] {
        daemon.wait_metric(
            "haios_requests_refused_total",
            &[("route", route), ("reason", "body_too_large")],
            SETTLE,
            |v| v == 1.0,
        );
    }
    crate::util::wait_for("the log to name the size and the setting", SETTLE, || {
        daemon
            .logs()
            .iter()
            .any(|l| {
                l.contains("request body over the limit refused")
                    && l.contains("otlp.max_body_bytes")
                    && l.contains(&format!("{}", large.len()))
            })
            .then_some(())
    });
    let (code, answer) = crate::verbs::doctor(&format!("http://{}", daemon.addr));
    assert_eq!(code, 3, "{answer}");
    let refused = crate::verbs::finding(&answer, "refused bodies");
    assert_eq!(refused["status"], "red", "{answer}");
    assert!(
        refused["fix"]
            .as_str()
            .is_some_and(|f| f.contains("server.max_body_bytes")),
        "the last refusal was on /v1/events: {answer}"
    );
}

#[test]
fn a_grpc_message_over_the_cap_is_counted() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let port = crate::util::free_port();
    let daemon = Daemon::start(&format!(
        "[otlp]\ngrpc_listen = \"127.0.0.1:{port}\"\nmax_body_bytes = 65536\n"
    ));
    crate::util::wait_for("the gRPC receiver", SETTLE, || {
        (daemon.log_count("listening for OTLP/gRPC") > 0).then_some(())
    });
    let request = big_trace_export("grpc-big", 100, 9);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let refused = runtime.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .expect("connects");
        client.export(request).await.expect_err("over the cap")
    });
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    daemon.wait_metric(
        "haios_requests_refused_total",
        &[("route", "otlp_grpc"), ("reason", "body_too_large")],
        SETTLE,
        |v| v == 1.0,
    );
    assert_eq!(tokens(&daemon, "grpc-big", "gpt-4o-mini", "input"), 0.0);
}

#[test]
fn spans_without_ids_count_once_and_nan_token_counts_are_refused() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let daemon = Daemon::start("");
    let number = |key: &str, value: any_value::Value| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let end = now_ns();
    let span = |input: any_value::Value| Span {
        name: "chat".into(),
        start_time_unix_nano: end - 1_000_000,
        end_time_unix_nano: end,
        attributes: vec![
            kv("gen_ai.request.model", "gpt-4o-mini"),
            number("gen_ai.usage.input_tokens", input),
            number("gen_ai.usage.output_tokens", any_value::Value::IntValue(10)),
        ],
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "no-ids")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(any_value::Value::IntValue(100)),
                    span(any_value::Value::DoubleValue(f64::NAN)),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    for _ in 0..2 {
        let (status, _, answer) = daemon.post_raw(
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &request.encode_to_vec(),
        );
        assert_eq!(status, 200);
        let answer =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(
                answer.as_slice(),
            )
            .expect("an OTLP answer");
        let partial = answer.partial_success.expect("the NaN span is refused");
        assert_eq!(partial.rejected_spans, 1);
        assert!(
            partial.error_message.contains("input_tokens"),
            "{}",
            partial.error_message
        );
    }
    assert_eq!(
        tokens(&daemon, "no-ids", "gpt-4o-mini", "input"),
        100.0,
        "counted once"
    );
    assert_eq!(
        otlp_events(&daemon, "llm_usage", "duplicate"),
        1.0,
        "the resend"
    );
    // Exporters throw the partial success away: the refusal is logged (once for both sends,
    // within ten seconds) and red in doctor, naming the rule.
    let logged = daemon.log_count("OTLP items refused");
    assert_eq!(logged, 1, "{:?}", daemon.logs());
    let (code, answer) = crate::verbs::doctor(&daemon.url(""));
    assert_eq!(code, 3, "{answer}");
    let rejected = crate::verbs::finding(&answer, "rejected telemetry");
    assert_eq!(rejected["status"], "red", "{answer}");
    let detail = rejected["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("2 OTLP items refused") && detail.contains("input_tokens"),
        "{detail}"
    );
}

/// Tokens by kind a stand-in's answers reported: uncached input, cache read, cache write,
/// output, for one provider.
fn standin_kinds(calls: &[Value], provider: &str) -> [u64; 4] {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    calls
        .iter()
        .filter(|c| c["provider"] == provider)
        .map(|c| {
            let u = &c["usage"];
            match provider {
                // Anthropic counts input without the cache.
                "anthropic" => [
                    n(&u["input_tokens"]),
                    n(&u["cache_read_input_tokens"]),
                    n(&u["cache_creation_input_tokens"]),
                    n(&u["output_tokens"]),
                ],
                _ => [n(&u["prompt_tokens"]), 0, 0, n(&u["completion_tokens"])],
            }
        })
        .fold([0; 4], |a, b| {
            [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
        })
}

#[test]
fn instrumented_official_sdks_are_counted_once_per_call_from_their_spans_though_metrics_came_first()
{
    let Some(python) = crate::util::genai_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = crate::util::StandIn::start(dir.path(), None);
    let daemon = Daemon::start("");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/otlp/instrumented_sdks.py"
    );
    let output = Command::new(python)
        .arg(script)
        .arg(&standin.url)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", daemon.url("/v1/otlp"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("exported"),
        "the instrumented SDKs failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let calls = standin.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    let agent = "instrumented-sdks";
    let kinds = |model: &str| {
        ["input", "cache_read", "cache_write", "output"]
            .map(|kind| tokens(&daemon, agent, model, kind) as u64)
    };
    // OpenLLMetry's Anthropic spans carry the whole split: exact by kind.
    assert_eq!(
        kinds("claude-sonnet-4-5"),
        standin_kinds(&calls, "anthropic")
    );
    // openai-v2 2.4b0 reports no cache split for Chat Completions (its gap, not one costmeter
    // can fill): its input is all input, as the stand-in's prompt_tokens.
    let openai = kinds("gpt-4o");
    let expected = standin_kinds(&calls, "openai");
    assert_eq!(
        (openai[0] + openai[1], openai[3]),
        (expected[0], expected[3])
    );
    // One count per call: the spans; the histograms, flushed first and held, were the same
    // calls again.
    assert_eq!(otlp_events(&daemon, "llm_usage", "accepted"), 4.0);
    assert!(otlp_events(&daemon, "llm_usage", "duplicate") >= 2.0);
}

/// `costmeter setup AGENT --route otlp --write --file FILE` against `daemon`: the agent's
/// telemetry settings as a user gets them.
fn setup_otlp(daemon: &Daemon, agent: &str, file: &std::path::Path) {
    let setup = Command::new(env!("CARGO_BIN_EXE_costmeter"))
        .args(["setup", agent, "--route", "otlp", "--write", "--url"])
        .arg(daemon.url(""))
        .arg("--file")
        .arg(file)
        .output()
        .expect("setup runs");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
}

/// An empty working directory for an agent CLI.
fn work_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    work
}

#[test]
fn the_real_codex_cli_s_telemetry_meters_its_calls_exactly_and_once() {
    let Some(codex) = crate::util::codex_cli() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = crate::util::StandIn::start(dir.path(), None);
    let daemon = Daemon::start("");
    // Codex's telemetry settings as `costmeter setup codex` writes them, plus the stand-in as
    // its model provider (the Responses API, streamed).
    let home = dir.path().join("codex-home");
    std::fs::create_dir_all(&home).expect("home");
    let config = home.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "model = \"gpt-5.5\"\nmodel_provider = \"standin\"\napproval_policy = \"never\"\n\
             sandbox_mode = \"read-only\"\n\n[model_providers.standin]\nname = \"standin\"\n\
             base_url = \"{}/v1\"\nenv_key = \"STANDIN_KEY\"\nwire_api = \"responses\"\n",
            standin.url
        ),
    )
    .expect("config");
    setup_otlp(&daemon, "codex", &config);
    let work = work_dir(&dir);
    let run = Command::new(codex)
        .args(["exec", "--skip-git-repo-check", "Say hello"])
        .current_dir(&work)
        .env("CODEX_HOME", &home)
        .env("STANDIN_KEY", "sk-test")
        .output()
        .expect("codex runs");
    assert!(
        run.status.success(),
        "codex failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );

    // The turn's model calls: the streamed Responses calls the stand-in answered.
    let calls: Vec<Value> = standin
        .calls()
        .into_iter()
        .filter(|c| c["path"] == "/v1/responses" && c["stream"] == true)
        .collect();
    assert!(!calls.is_empty(), "codex called the stand-in");
    let sum = |key: &dyn Fn(&Value) -> u64| calls.iter().map(|c| key(&c["usage"])).sum::<u64>();
    let input = sum(&|u| u["input_tokens"].as_u64().unwrap_or(0));
    let cached = sum(&|u| {
        u["input_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0)
    });
    let output = sum(&|u| u["output_tokens"].as_u64().unwrap_or(0));
    let agent = "codex_exec";
    wait_for("codex's telemetry", SETTLE, || {
        (tokens(&daemon, agent, "gpt-5.5", "output") >= output as f64).then_some(())
    });
    assert_eq!(
        ["input", "cache_read", "output"].map(|k| tokens(&daemon, agent, "gpt-5.5", k) as u64),
        [input - cached, cached, output],
        "tokens by kind against the stand-in's usage"
    );
    // Codex exports each call as a span and as its completed-response log event: one count.
    assert_eq!(
        otlp_events(&daemon, "llm_usage", "accepted"),
        calls.len() as f64
    );
    assert!(otlp_events(&daemon, "llm_usage", "duplicate") >= calls.len() as f64);
    let table = costmeter::pricing::PriceTable::load(None, &Default::default()).expect("prices");
    let price = table
        .lookup("gpt-5.5")
        .expect("Codex's default model is priced");
    let expected = ((input - cached) as f64 * price.input
        + cached as f64 * price.cache_read.unwrap_or(price.input)
        + output as f64 * price.output)
        / 1e6;
    let usd = series(
        &daemon,
        "haios_usd_spend_total",
        &[("agent", agent), ("model", "gpt-5.5")],
    );
    assert!((usd - expected).abs() < 1e-9, "{usd} against {expected}");
}

#[test]
fn the_real_claude_code_s_metrics_and_logs_meter_its_call_exactly_and_once() {
    let Some(claude) = crate::util::claude_code_cli() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = crate::util::StandIn::start(dir.path(), None);
    let daemon = Daemon::start("");
    let home = dir.path().join("home");
    let work = work_dir(&dir);
    // Telemetry as Claude Code's monitoring docs set it, both exporters on, short intervals.
    let run = Command::new(claude)
        .args(["-p", "Say hello"])
        .current_dir(&work)
        .env("HOME", &home)
        .env("ANTHROPIC_BASE_URL", &standin.url)
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_ENABLE_TELEMETRY", "1")
        .env("OTEL_METRICS_EXPORTER", "otlp")
        .env("OTEL_LOGS_EXPORTER", "otlp")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", daemon.url("/v1/otlp"))
        .env("OTEL_METRIC_EXPORT_INTERVAL", "1000")
        .env("OTEL_LOGS_EXPORT_INTERVAL", "500")
        .output()
        .expect("claude runs");
    assert!(
        run.status.success(),
        "claude failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let calls: Vec<Value> = standin
        .calls()
        .into_iter()
        .filter(|c| c["provider"] == "anthropic")
        .collect();
    assert!(!calls.is_empty(), "claude called the stand-in");
    let model = calls[0]["model"].as_str().expect("model").to_string();
    let [input, cache_read, cache_write, output] = standin_kinds(&calls, "anthropic");
    let agent = "claude-code";
    wait_for("Claude Code's telemetry", SETTLE, || {
        (tokens(&daemon, agent, &model, "output") >= output as f64).then_some(())
    });
    assert_eq!(
        ["input", "cache_read", "cache_write", "output"]
            .map(|k| tokens(&daemon, agent, &model, k) as u64),
        [input, cache_read, cache_write, output],
        "tokens by kind against the stand-in's usage"
    );
    // Its metrics and its api_request logs are the same calls: counted once.
    assert_eq!(
        otlp_events(&daemon, "llm_usage", "accepted"),
        calls.len() as f64
    );
    // Claude Code reports its own cost; it agrees with the table's price of its default model.
    let table = costmeter::pricing::PriceTable::load(None, &Default::default()).expect("prices");
    let price = table
        .lookup(&model)
        .expect("Claude Code's default model is priced");
    let expected = (input as f64 * price.input
        + cache_read as f64 * price.cache_read.unwrap_or(price.input)
        + cache_write as f64 * price.cache_write.unwrap_or(price.input)
        + output as f64 * price.output)
        / 1e6;
    let usd = series(
        &daemon,
        "haios_usd_spend_total",
        &[("agent", agent), ("model", &model)],
    );
    assert!((usd - expected).abs() < 1e-9, "{usd} against {expected}");
    assert_eq!(
        series(
            &daemon,
            "haios_cost_events_total",
            &[("confidence", "exact")]
        ),
        calls.len() as f64
    );
}

/// A child killed (and reaped) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_real_gemini_cli_s_logs_and_metrics_meter_each_call_exactly_and_once() {
    let Some(gemini) = crate::util::gemini_cli() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = crate::util::StandIn::start(dir.path(), None);
    let daemon = Daemon::start("");
    let home = dir.path().join("home");
    let settings = home.join(".gemini/settings.json");
    std::fs::create_dir_all(settings.parent().expect("dir")).expect("settings dir");
    std::fs::write(
        &settings,
        r#"{"security": {"auth": {"selectedType": "gemini-api-key"}}}"#,
    )
    .expect("settings");
    setup_otlp(&daemon, "gemini-cli", &settings);
    let work = work_dir(&dir);
    // Gemini CLI retries the stand-in's answer to its routing call with a backoff rather than
    // ending: its calls are compared as they come, and it is stopped after.
    let _gemini = Killed(
        Command::new(gemini)
            .args(["-p", "Say hello"])
            .current_dir(&work)
            .env("HOME", &home)
            .env("GEMINI_API_KEY", "test-key")
            .env("GOOGLE_GEMINI_BASE_URL", &standin.url)
            .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("gemini runs"),
    );
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (calls, models) = wait_for(
        "Gemini CLI's telemetry of two calls",
        Duration::from_secs(90),
        || {
            let calls: Vec<Value> = standin.calls();
            let mut models: Vec<String> = calls
                .iter()
                .filter_map(|c| c["model"].as_str().map(String::from))
                .collect();
            models.sort();
            models.dedup();
            let matches = models.iter().all(|model| {
                let of: Vec<&Value> = calls
                    .iter()
                    .filter(|c| c["model"] == model.as_str())
                    .map(|c| &c["usage"])
                    .collect();
                let prompt: u64 = of.iter().map(|u| n(&u["promptTokenCount"])).sum();
                let cached: u64 = of.iter().map(|u| n(&u["cachedContentTokenCount"])).sum();
                let out: u64 = of
                    .iter()
                    .map(|u| n(&u["candidatesTokenCount"]) + n(&u["thoughtsTokenCount"]))
                    .sum();
                let kinds = ["input", "cache_read", "output"]
                    .map(|k| tokens(&daemon, "gemini-cli", model, k) as u64);
                kinds == [prompt - cached, cached, out]
            });
            // Each call once: its api_response log counts, its metrics (gemini_cli and GenAI)
            // are the same calls again.
            // (and the metrics did arrive: duplicates).
            let once = otlp_events(&daemon, "llm_usage", "accepted") == calls.len() as f64
                && otlp_events(&daemon, "llm_usage", "duplicate") >= 1.0;
            (calls.len() >= 2 && matches && once).then_some((calls.len(), models))
        },
    );
    assert!(calls >= 2, "{models:?}");
    for model in &models {
        assert!(
            series(
                &daemon,
                "haios_usd_spend_total",
                &[("agent", "gemini-cli"), ("model", model)]
            ) > 0.0,
            "Gemini CLI's model {model} is priced"
        );
    }
}

#[test]
fn the_real_opencode_s_spans_meter_its_calls_with_their_cache_split() {
    let Some(opencode) = crate::util::opencode_cli() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let standin = crate::util::StandIn::start(dir.path(), None);
    let daemon = Daemon::start("");
    let home = dir.path().join("home");
    let config = home.join(".config/opencode/opencode.json");
    std::fs::create_dir_all(config.parent().expect("dir")).expect("config dir");
    std::fs::write(
        &config,
        json!({"model": "anthropic/claude-sonnet-4-5", "experimental": {"openTelemetry": true},
               "provider": {"anthropic": {"options": {"baseURL": format!("{}/v1", standin.url)}}}})
        .to_string(),
    )
    .expect("config");
    let work = work_dir(&dir);
    let run = Command::new(opencode)
        .args(["run", "Say hello"])
        .current_dir(&work)
        .env("HOME", &home)
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", daemon.url("/v1/otlp"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .output()
        .expect("opencode runs");
    assert!(
        run.status.success(),
        "opencode failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let calls = standin.calls();
    // What opencode exported is exact by kind, its input (which includes the cache) split by
    // `ai.usage.inputTokenDetails`; opencode 1.18.33 loses the span of its last call when
    // `run` exits, so only calls it exported are compared, and at least one must be.
    let exact = |c: &Value| {
        let model = c["model"].as_str().unwrap_or("");
        let want = standin_kinds(std::slice::from_ref(c), "anthropic");
        let got = ["input", "cache_read", "cache_write", "output"]
            .map(|k| tokens(&daemon, "opencode", model, k) as u64);
        got == want
    };
    wait_for("opencode's telemetry", SETTLE, || {
        calls.iter().any(exact).then_some(())
    });
    let accepted = otlp_events(&daemon, "llm_usage", "accepted");
    let exported = calls.iter().filter(|c| exact(c)).count() as f64;
    assert_eq!(
        accepted, exported,
        "every counted call matches one the stand-in answered"
    );
}

/// An OTLP/JSON attribute.
fn attr(key: &str, value: Value) -> Value {
    match value {
        Value::String(s) => json!({"key": key, "value": {"stringValue": s}}),
        other => json!({"key": key, "value": {"intValue": other.to_string()}}),
    }
}

#[test]
fn cursor_and_copilot_cli_shapes_are_metered_once_per_call_through_the_daemon() {
    let daemon = Daemon::start("");
    let now = now_ns();
    // Cursor: a call as its api_request log event and as its token counters, in either order.
    let resource = json!({"attributes": [attr("service.name", json!("cursor")), attr("session.id", json!("c-1"))]});
    let points: Vec<Value> = [
        ("input", 100),
        ("cache_read", 900),
        ("cache_creation", 50),
        ("output", 70),
    ]
    .iter()
    .map(|(kind, n)| {
        json!({"timeUnixNano": now.to_string(), "asInt": n.to_string(),
               "attributes": [attr("cursor.token.type", json!(kind)), attr("model", json!("claude-sonnet-4-5"))]})
    })
    .collect();
    let counters = json!({"resourceMetrics": [{"resource": resource, "scopeMetrics": [{"metrics": [{
        "name": "cursor.token.usage",
        "sum": {"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": points}
    }]}]}]});
    let log = |id: &str, time: u64| {
        json!({"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": [{
            "timeUnixNano": time.to_string(), "eventName": "cursor.api.request",
            "attributes": [attr("cursor.event.id", json!(id)), attr("model", json!("claude-sonnet-4-5")),
                           attr("input_tokens", json!(100)), attr("cache_read_tokens", json!(900)),
                           attr("cache_creation_tokens", json!(50)), attr("output_tokens", json!(70))]
        }]}]}]})
    };
    for (path, body) in [
        ("/v1/otlp/v1/metrics", counters),
        ("/v1/otlp/v1/logs", log("evt-1", now - 1_000_000_000)),
        // A resend of the same event under a new time.
        ("/v1/otlp/v1/logs", log("evt-1", now + 1_000_000)),
    ] {
        let (status, answer) = post_json(&daemon, path, body.to_string().as_bytes());
        assert_eq!(status, 200, "{answer}");
    }
    let kinds = |agent: &str, model: &str| {
        ["input", "cache_read", "cache_write", "output"]
            .map(|k| tokens(&daemon, agent, model, k) as u64)
    };
    assert_eq!(kinds("cursor", "claude-sonnet-4-5"), [100, 900, 50, 70]);
    // GitHub Copilot CLI: an invoke_agent span summing its two chat spans.
    let span = |id: &str, parent: &str, name: &str, extra: Vec<Value>| {
        let mut attributes = vec![attr("gen_ai.provider.name", json!("github"))];
        attributes.extend(extra);
        json!({"traceId": "5b8efff798038103d269b633813fc60c", "spanId": id, "parentSpanId": parent,
               "name": name, "startTimeUnixNano": (now - 5_000_000_000).to_string(),
               "endTimeUnixNano": now.to_string(), "attributes": attributes})
    };
    let chat = |id: &str, input: i64, cached: i64| {
        span(
            id,
            "eee19b7ec3c1b174",
            "chat gpt-5.5",
            vec![
                attr("gen_ai.operation.name", json!("chat")),
                attr("gen_ai.request.model", json!("gpt-5.5")),
                attr("gen_ai.usage.input_tokens", json!(input)),
                attr("gen_ai.usage.cache_read.input_tokens", json!(cached)),
                attr("gen_ai.usage.output_tokens", json!(40)),
            ],
        )
    };
    let traces = json!({"resourceSpans": [{"resource": {"attributes": [attr("service.name", json!("github-copilot"))]},
    "scopeSpans": [{"spans": [
        chat("eee19b7ec3c1b175", 3_000, 2_000),
        chat("eee19b7ec3c1b176", 4_000, 3_500),
        span("eee19b7ec3c1b174", "", "invoke_agent copilot", vec![
            attr("gen_ai.operation.name", json!("invoke_agent")),
            attr("gen_ai.agent.name", json!("copilot-cli")),
            attr("gen_ai.usage.input_tokens", json!(7_000)),
            attr("gen_ai.usage.output_tokens", json!(80)),
        ]),
    ]}]}]});
    let (status, answer) = post_json(&daemon, "/v1/otlp/v1/traces", traces.to_string().as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(kinds("copilot-cli", "gpt-5.5"), [1_500, 5_500, 0, 80]);
    assert_eq!(
        otlp_events(&daemon, "llm_usage", "accepted"),
        3.0,
        "one Cursor call, two chats"
    );
}

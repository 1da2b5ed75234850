//! Spans reach a real OTLP receiver, over gRPC (the `opentelemetry-proto` tonic service) and
//! over HTTP/protobuf, with the names, parentage, trace ids, timestamps and cost records the
//! events imply; a collector that is down leaves ingestion working and `/readyz` failing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

use crate::util::{Daemon, at, wait_for};

const SETTLE: Duration = Duration::from_secs(20);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AGENT_SPAN: &str = "00f067aa0ba902b7";

pub(crate) type Received = Arc<Mutex<Vec<Span>>>;

fn keep(received: &Received, request: ExportTraceServiceRequest) {
    let mut spans = received.lock().expect("lock");
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            spans.extend(scope.spans);
        }
    }
}

struct GrpcReceiver(Received);

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Runs `serve` on `listener` in a current-thread runtime on a thread of its own.
fn serve_on_own_thread<F>(
    listener: std::net::TcpListener,
    serve: impl FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
) where
    F: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            serve(listener).await;
        });
    });
}

/// Starts an OTLP receiver on loopback in a runtime of its own; returns its base URL.
fn start_receiver(grpc: bool) -> (String, Received) {
    start_slow_receiver(grpc, Duration::ZERO)
}

/// An OTLP/gRPC receiver that speaks TLS with `ca`'s server certificate (tonic's own server
/// TLS); returns its https URL.
pub(crate) fn start_grpc_tls_receiver(ca: &crate::util::TestCa) -> (String, Received) {
    let received: Received = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().expect("addr").port()
    );
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(&ca.cert).expect("cert"),
        std::fs::read(&ca.key).expect("key"),
    );
    let store = received.clone();
    serve_on_own_thread(listener, move |listener| async move {
        tonic::transport::Server::builder()
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .expect("server TLS")
            .add_service(TraceServiceServer::new(GrpcReceiver(store)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("grpc receiver");
    });
    (url, received)
}

/// An OTLP receiver that answers each HTTP export only after `delay`.
fn start_slow_receiver(grpc: bool, delay: Duration) -> (String, Received) {
    let received: Received = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let store = received.clone();
    serve_on_own_thread(listener, move |listener| async move {
        {
            if grpc {
                let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(GrpcReceiver(store)))
                    .serve_with_incoming(incoming)
                    .await
                    .expect("grpc receiver");
            } else {
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: axum::body::Bytes| {
                        let store = store.clone();
                        async move {
                            tokio::time::sleep(delay).await;
                            match ExportTraceServiceRequest::decode(body) {
                                Ok(request) => {
                                    keep(&store, request);
                                    (
                                        axum::http::StatusCode::OK,
                                        ExportTraceServiceResponse {
                                            partial_success: None,
                                        }
                                        .encode_to_vec(),
                                    )
                                }
                                Err(_) => (axum::http::StatusCode::BAD_REQUEST, Vec::new()),
                            }
                        }
                    }),
                );
                axum::serve(listener, app).await.expect("http receiver");
            }
        }
    });
    (url, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                _ => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn nanos(iso: &str) -> u64 {
    let ts: jiff::Timestamp = iso.parse().expect("timestamp");
    u64::try_from(ts.as_nanosecond()).expect("positive")
}

pub(crate) fn drive_a_run(daemon: &Daemon) {
    daemon.post_events(&json!([
        {"type": "run_start", "run_id": "run-7", "agent": "coder", "ts": at("10:00:00"), "trace_id": TRACE},
        {"type": "task_start", "task_id": "t-1", "run_id": "run-7", "task_type": "build", "agent": "coder",
         "ts": at("10:00:01"), "trace_id": TRACE, "span_id": AGENT_SPAN},
        {"type": "llm_usage", "agent": "coder", "model": "claude-sonnet-4-5", "task_id": "t-1", "run_id": "run-7",
         "input_tokens": 10000, "cache_read_tokens": 6000, "cache_write_tokens": 2000, "output_tokens": 1000, "trace_id": TRACE},
        {"type": "file_write", "task_id": "t-1", "bytes": 4096, "path": "src/main.rs", "ts": at("10:00:05")},
        {"type": "task_end", "task_id": "t-1", "run_id": "run-7", "task_type": "build", "result": "success", "ts": at("10:00:20")},
        {"type": "run_end", "run_id": "run-7", "result": "failure", "failure_class": "tool", "error_summary": "tests failed", "ts": at("10:00:30")}
    ]));
}

pub(crate) fn assert_spans_of_the_run(received: &Received) {
    let spans = wait_for("three spans at the receiver", SETTLE, || {
        let spans = received.lock().expect("lock").clone();
        (spans.len() >= 3).then_some(spans)
    });
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:?}"))
    };
    let (plan, task, file) = (by_name("plan"), by_name("task"), by_name("file_write"));
    for span in [plan, task, file] {
        assert_eq!(
            hex(&span.trace_id),
            TRACE,
            "{} joins the agent's trace",
            span.name
        );
    }
    assert!(
        plan.parent_span_id.is_empty(),
        "the plan is the run's root here"
    );
    assert_eq!(
        hex(&task.parent_span_id),
        AGENT_SPAN,
        "the task hangs under the agent's span it started in"
    );
    assert_eq!(
        file.parent_span_id, task.span_id,
        "file_write is a child of its task"
    );
    assert_eq!(plan.start_time_unix_nano, nanos(&at("10:00:00")));
    assert_eq!(plan.end_time_unix_nano, nanos(&at("10:00:30")));
    assert_eq!(task.start_time_unix_nano, nanos(&at("10:00:01")));
    assert_eq!(task.end_time_unix_nano, nanos(&at("10:00:20")));
    assert_eq!(file.start_time_unix_nano, nanos(&at("10:00:05")));
    let task_attributes = attributes(task);
    assert_eq!(task_attributes["task.type"], "build");
    assert_eq!(task_attributes["result"], "success");
    assert_eq!(task_attributes["agent"], "coder");
    assert_eq!(task_attributes["cost_record.tokens"], "11000");
    assert_eq!(task_attributes["cost_record.usd"], "0.0303");
    assert!(task_attributes.contains_key("cost_record.cpu_seconds"));
    let plan_attributes = attributes(plan);
    assert_eq!(plan_attributes["result"], "failure");
    assert_eq!(plan_attributes["failure_class"], "tool");
    assert_eq!(attributes(file)["file.bytes"], "4096");
    assert!(
        !attributes(file).values().any(|v| v.contains("main.rs")),
        "the path itself is never exported"
    );
}

#[test]
fn spans_reach_an_otlp_grpc_receiver() {
    let (url, received) = start_receiver(true);
    let daemon = Daemon::start(&format!(
        "[telemetry]\notlp_endpoint = \"{url}\"\nprotocol = \"grpc\"\n"
    ));
    drive_a_run(&daemon);
    assert_spans_of_the_run(&received);
}

#[test]
fn spans_reach_an_otlp_http_protobuf_receiver() {
    let (url, received) = start_receiver(false);
    let daemon = Daemon::start(&format!(
        "[telemetry]\notlp_endpoint = \"{url}\"\nprotocol = \"http/protobuf\"\n"
    ));
    drive_a_run(&daemon);
    assert_spans_of_the_run(&received);
}

#[test]
fn a_collector_that_is_down_fails_readiness_but_not_ingestion() {
    // A port that was just free: nothing listens there.
    let port = crate::util::free_port();
    let daemon = Daemon::start(&format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n"
    ));
    for batch in 0..20 {
        let events: Vec<_> = (0..50)
            .map(|i| json!({"type": "file_write", "event_id": format!("f{batch}-{i}"), "bytes": 1}))
            .collect();
        let answer = daemon.post_events(&serde_json::Value::Array(events));
        assert_eq!(answer["accepted"], 50);
    }
    assert_eq!(
        daemon.scrape().value(
            "haios_events_total",
            &[
                ("source", "http"),
                ("type", "file_write"),
                ("result", "accepted")
            ]
        ),
        Some(1000.0)
    );
    let (status, _, body) = daemon.get("/readyz", None);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("\"telemetry\"") && body.contains("unreachable"),
        "{body}"
    );

    let quiet = Daemon::start(&format!(
        "[telemetry]\nmode = \"dev_fast\"\notlp_endpoint = \"http://127.0.0.1:{port}\"\n"
    ));
    quiet.wait_ready();
}

#[test]
fn budget_transitions_become_events_on_the_open_task_span() {
    let (url, received) = start_receiver(true);
    let daemon = Daemon::start(&format!(
        "[telemetry]\notlp_endpoint = \"{url}\"\n\n[[budget]]\nname = \"tiny\"\nresource = \"usd\"\nlimit = 0.01\non_exceed = \"alert\"\n"
    ));
    daemon.post_events(&json!([
        {"type": "task_start", "task_id": "t-b", "task_type": "build"},
        {"type": "llm_usage", "agent": "coder", "model": "gpt-5", "task_id": "t-b", "input_tokens": 10, "output_tokens": 1, "cost_usd": 0.02}
    ]));
    daemon.post_events(
        &json!([{"type": "task_end", "task_id": "t-b", "task_type": "build", "result": "success"}]),
    );
    let span = wait_for("the task span", SETTLE, || {
        received
            .lock()
            .expect("lock")
            .iter()
            .find(|s| s.name == "task")
            .cloned()
    });
    let names: Vec<&str> = span.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["budget_warning", "BUDGET_EXCEEDED"]);
    assert!(
        span.events
            .iter()
            .all(|e| e.time_unix_nano >= span.start_time_unix_nano
                && e.time_unix_nano <= span.end_time_unix_nano)
    );
}

#[test]
fn spans_queued_at_sigterm_are_exported_before_exit() {
    let (url, received) = start_slow_receiver(false, Duration::from_millis(300));
    let daemon = Daemon::start(&format!(
        "[telemetry]\notlp_endpoint = \"{url}\"\nprotocol = \"http/protobuf\"\n"
    ));
    // 1,500 runs end just before SIGTERM: three exports of 512 spans, 300 ms each.
    let events: Vec<serde_json::Value> = (0..1500)
        .flat_map(|i| {
            let run = format!("last-{i}");
            [
                json!({"type": "run_start", "run_id": run}),
                json!({"type": "run_end", "run_id": run, "result": "success"}),
            ]
        })
        .collect();
    daemon.post_events(&serde_json::Value::Array(events));
    let status = daemon.stop();
    assert!(status.success(), "{status}");
    let plans = received
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| s.name == "plan")
        .count();
    assert_eq!(
        plans, 1500,
        "every span queued before SIGTERM reached the collector"
    );
}

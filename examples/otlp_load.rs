//! Load for the OTLP receiver benchmark: threads that POST OTLP/HTTP protobuf trace exports,
//! each a batch of GenAI spans with fresh span ids (so every span is new usage, not a
//! duplicate), for a while, then print what got through.
//!
//! `cargo run --release --example otlp_load -- URL SECONDS [THREADS=4] [BATCH=512]`
//! prints `requests=N spans=N seconds=S spans_per_s=R failures=F`.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// One export of `batch` chat spans as an instrumented agent sends them.
fn request(batch: usize) -> ExportTraceServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let span = |i: usize| Span {
        trace_id: vec![0x4b; 16],
        span_id: vec![0; 8],
        name: "chat gpt-4o".to_string(),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000 + i as u64,
        attributes: vec![
            attribute(
                "gen_ai.operation.name",
                any_value::Value::StringValue("chat".into()),
            ),
            attribute(
                "gen_ai.provider.name",
                any_value::Value::StringValue("openai".into()),
            ),
            attribute(
                "gen_ai.request.model",
                any_value::Value::StringValue("gpt-4o".into()),
            ),
            attribute(
                "gen_ai.response.model",
                any_value::Value::StringValue("gpt-4o".into()),
            ),
            attribute(
                "gen_ai.usage.input_tokens",
                any_value::Value::IntValue(1200),
            ),
            attribute(
                "gen_ai.usage.output_tokens",
                any_value::Value::IntValue(300),
            ),
            attribute(
                "gen_ai.usage.cache_read.input_tokens",
                any_value::Value::IntValue(200),
            ),
        ],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute(
                    "service.name",
                    any_value::Value::StringValue("load".into()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..batch).map(span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:18000/v1/traces".into());
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let threads: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    let batch: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(512);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let mut export = request(batch);
                let (mut requests, mut failures, mut counter) = (0u64, 0u64, 0u64);
                while Instant::now() < deadline {
                    for span in &mut export.resource_spans[0].scope_spans[0].spans {
                        counter += 1;
                        span.span_id = ((thread << 48) | counter).to_be_bytes().to_vec();
                    }
                    let body = export.encode_to_vec();
                    let ok = agent
                        .post(&url)
                        .header("Content-Type", "application/x-protobuf")
                        .send(&body[..])
                        .is_ok_and(|r| r.status().as_u16() == 200);
                    if ok {
                        requests += 1;
                    } else {
                        failures += 1;
                    }
                }
                (requests, failures)
            })
        })
        .collect();
    let (mut requests, mut failures) = (0, 0);
    for worker in workers {
        let (r, f) = worker.join().unwrap_or((0, 0));
        requests += r;
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let spans = requests * batch as u64;
    println!(
        "requests={requests} spans={spans} seconds={elapsed:.2} spans_per_s={:.0} failures={failures}",
        spans as f64 / elapsed
    );
}

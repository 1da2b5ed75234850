//! The pieces of `benches/proxy_overhead.sh`, in one program:
//!
//! - `standin ADDR`: a fast stand-in for OpenAI's Chat Completions (`POST /v1/chat/completions`),
//!   whole or streamed (SSE, `x-standin-delay-ms` between chunks, usage in the last chunk when
//!   asked), so the provider side is never the bottleneck.
//! - `bare ADDR UPSTREAM`: the baseline — a bare hyper reverse proxy that forwards and streams
//!   back, reading nothing.
//! - `load URL CONCURRENCY SECONDS`: closed-loop callers posting a chat request; prints calls/s
//!   and latency percentiles as JSON.
//! - `ttft URL DELAY_MS`: one slow stream; prints when its first and last events arrived.
//!
//!   cargo run --release --example proxy_bench -- standin 127.0.0.1:9101

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type Boxed = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

const REQUEST: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":64}"#;
const STREAM_REQUEST: &str = r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":64}"#;

fn boxed<B, E>(body: B) -> Boxed
where
    B: hyper::body::Body<Data = Bytes, Error = E> + Send + Sync + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    body.map_err(Into::into).boxed()
}

async fn serve<F, Fut>(addr: &str, handler: F) -> !
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Boxed>, Infallible>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.expect("bind");
    println!("ready");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handler))
                .await;
        });
    }
}

static CALLS: AtomicU64 = AtomicU64::new(0);

async fn standin(request: Request<Incoming>) -> Result<Response<Boxed>, Infallible> {
    if request.uri().path() == "/calls" {
        let calls = CALLS.load(Ordering::Relaxed).to_string();
        return Ok(Response::new(boxed(Full::new(Bytes::from(calls)))));
    }
    let delay = request
        .headers()
        .get("x-standin-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = format!("chatcmpl-bench{n:012}");
    let model = json["model"].as_str().unwrap_or("gpt-4o").to_string();
    let usage = serde_json::json!({"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}});
    if json["stream"] != true {
        let answer = serde_json::json!({"id": id, "object": "chat.completion", "created": 1_796_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, how are you?"}, "finish_reason": "stop"}],
            "usage": usage});
        return Ok(Response::builder()
            .header("content-type", "application/json")
            .header("x-request-id", format!("req_{n}"))
            .body(boxed(Full::new(Bytes::from(answer.to_string()))))
            .expect("response"));
    }
    let include = json["stream_options"]["include_usage"] == true;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let chunk = |content: Option<&str>, with_usage: Option<&serde_json::Value>| {
            let mut data = serde_json::json!({"id": id, "object": "chat.completion.chunk", "created": 1_796_000_000,
                "model": model,
                "choices": match content { Some(c) => serde_json::json!([{"index": 0, "delta": {"content": c}, "finish_reason": null}]), None => serde_json::json!([]) }});
            if include {
                data["usage"] = with_usage.cloned().unwrap_or(serde_json::Value::Null);
            }
            Bytes::from(format!("data: {data}\n\n"))
        };
        for word in ["Hello", " there,", " how", " are", " you?"] {
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if tx
                .send(Ok(Frame::data(chunk(Some(word), None))))
                .await
                .is_err()
            {
                return;
            }
        }
        if include {
            let _ = tx.send(Ok(Frame::data(chunk(None, Some(&usage))))).await;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Response::builder()
        .header("content-type", "text/event-stream")
        .body(boxed(StreamBody::new(stream)))
        .expect("response"))
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

async fn bare(addr: &str, upstream: String) -> ! {
    let client = Arc::new(client());
    serve(addr, move |request: Request<Incoming>| {
        let client = client.clone();
        let upstream = upstream.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut outbound = Request::builder()
                .method(parts.method)
                .uri(format!("{upstream}{path}"))
                .body(Full::new(body))
                .expect("request");
            *outbound.headers_mut() = parts.headers;
            outbound.headers_mut().remove("host");
            Ok(match client.request(outbound).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    Response::from_parts(parts, boxed(body))
                }
                Err(_) => Response::builder()
                    .status(502)
                    .body(boxed(Full::new(Bytes::new())))
                    .expect("response"),
            })
        }
    })
    .await
}

async fn load(url: String, concurrency: usize, seconds: u64) {
    let client = Arc::new(client());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut refused = 0u64;
            while Instant::now() < deadline {
                let request = Request::post(url.as_str())
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-bench")
                    .body(Full::new(Bytes::from_static(REQUEST.as_bytes())))
                    .expect("request");
                let started = Instant::now();
                match client.request(request).await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.into_body().collect().await;
                        latencies.push(started.elapsed());
                    }
                    Ok(response) if response.status().as_u16() == 402 => {
                        let _ = response.into_body().collect().await;
                        refused += 1;
                    }
                    _ => failures += 1,
                }
            }
            (latencies, failures, refused)
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    let mut refused = 0;
    for task in tasks {
        let (latencies, failed, budget_refused) = task.await.expect("caller");
        all.extend(latencies);
        failures += failed;
        refused += budget_refused;
    }
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({"calls": all.len(), "failures": failures, "refused": refused, "calls_per_s": all.len() as f64 / seconds as f64,
            "p50_ms": pick(0.5), "p99_ms": pick(0.99)})
    );
}

async fn ttft(url: String, delay_ms: u64) {
    let request = Request::post(url.as_str())
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-bench")
        .header("x-standin-delay-ms", delay_ms.to_string())
        .body(Full::new(Bytes::from_static(STREAM_REQUEST.as_bytes())))
        .expect("request");
    let started = Instant::now();
    let response = client().request(request).await.expect("answer");
    let mut body = response.into_body();
    let mut first = None;
    let mut last = Duration::ZERO;
    while let Some(Ok(frame)) = body.frame().await {
        if frame.data_ref().is_some_and(|d| !d.is_empty()) {
            let now = started.elapsed();
            first.get_or_insert(now);
            last = now;
        }
    }
    println!(
        "{}",
        serde_json::json!({"first_event_ms": first.unwrap_or_default().as_secs_f64() * 1000.0, "last_event_ms": last.as_secs_f64() * 1000.0})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    runtime.block_on(async {
        match arg(0).as_str() {
            "standin" => serve(&arg(1), standin).await,
            "bare" => bare(&arg(1), arg(2)).await,
            "load" => load(arg(1), arg(2).parse().unwrap_or(32), arg(3).parse().unwrap_or(10)).await,
            "ttft" => ttft(arg(1), arg(2).parse().unwrap_or(200)).await,
            _ => {
                eprintln!("usage: proxy_bench standin ADDR | bare ADDR UPSTREAM | load URL CONCURRENCY SECONDS | ttft URL DELAY_MS");
                std::process::exit(2);
            }
        }
    });
}

//! OpenTelemetry spans built from events (ADR 19-O7): `plan` for a run, `task` for a task
//! (child of its plan), `file_write` (child of its task), with the events' own timestamps and
//! trace ids so they join the agent's own trace.
//!
//! Spans are built after the fact, when the event that ends them is stored, so they are
//! assembled as `SpanData` and handed straight to the OTLP exporter (gRPC or HTTP/protobuf)
//! rather than through a live tracer. Export runs on its own task behind a bounded queue:
//! a collector that is down or slow never slows ingestion; spans that do not fit are dropped
//! and counted in the log.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// Spans waiting for export before new ones are dropped.
const QUEUE: usize = 8192;
/// Spans sent in one export call.
const BATCH: usize = 512;
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often reachability of the collector is checked for `/readyz`.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// `[telemetry] protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

/// `[telemetry] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Export, and fail readiness while the collector cannot be reached.
    Strict,
    /// Export nothing.
    DevFast,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    pub mode: Mode,
    /// From the config, else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    pub protocol: Protocol,
}

/// A finished span, as the ledger describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub name: &'static str,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    /// The parent is a span of the agent's own (from the event's `span_id`).
    pub parent_remote: bool,
    pub start_ms: i64,
    pub end_ms: i64,
    pub attributes: Vec<KeyValue>,
    /// (name, time, attributes), e.g. budget transitions while the span was open.
    pub events: Vec<(String, i64, Vec<KeyValue>)>,
    pub failed: bool,
}

/// Ids derived from a run or task id, so a child names its parent without a lookup.
pub fn derived_span_id(kind: &str, id: &str) -> [u8; 8] {
    let digest = Sha256::digest(format!("{kind}:{id}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    if bytes == [0; 8] {
        bytes[7] = 1;
    }
    bytes
}

pub fn derived_trace_id(kind: &str, id: &str) -> [u8; 16] {
    let digest = Sha256::digest(format!("trace:{kind}:{id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    if bytes == [0; 16] {
        bytes[15] = 1;
    }
    bytes
}

/// Parses W3C hex ids (already validated at ingestion).
pub fn hex_bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != N * 2 {
        return None;
    }
    let mut bytes = [0u8; N];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(bytes)
}

fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0))
}

impl SpanRecord {
    fn into_span_data(self, scope: &InstrumentationScope) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(self.trace_id),
                SpanId::from_bytes(self.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: self.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: self.parent_remote,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(self.name),
            start_time: system_time(self.start_ms),
            end_time: system_time(self.end_ms.max(self.start_ms)),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: {
                let mut events = SpanEvents::default();
                events.events = self
                    .events
                    .into_iter()
                    .map(|(name, at, attributes)| {
                        opentelemetry::trace::Event::new(name, system_time(at), attributes, 0)
                    })
                    .collect();
                events
            },
            links: SpanLinks::default(),
            status: if self.failed {
                Status::error("failed")
            } else {
                Status::Ok
            },
            instrumentation_scope: scope.clone(),
        }
    }
}

/// Whether the collector was reachable at the last probe and the last export succeeded.
#[derive(Debug, Default)]
pub struct ExportHealth {
    reachable: AtomicBool,
    last_export_failed: AtomicBool,
    /// Why the last export failed, with the endpoint (a TLS error names the certificate).
    last_error: std::sync::Mutex<Option<String>>,
}

impl ExportHealth {
    pub fn working(&self) -> bool {
        self.reachable.load(Ordering::Relaxed) && !self.last_export_failed.load(Ordering::Relaxed)
    }

    /// Why the last export failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, outcome: Option<String>) {
        self.last_export_failed
            .store(outcome.is_some(), Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = outcome;
    }
}

/// OTLP/HTTP through ureq on the blocking pool: the same rustls, roots and client
/// certificate as the webhook, instead of a second HTTP stack.
#[derive(Debug)]
struct UreqHttp(ureq::Agent);

/// Largest answer a collector may send back.
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for UreqHttp {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let agent = self.0.clone();
        let (parts, body) = request.into_parts();
        let request = opentelemetry_http::Request::from_parts(parts, body.to_vec());
        tokio::task::spawn_blocking(move || {
            let mut answer = agent.run(request)?;
            let status = answer.status();
            let body = answer
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER_BYTES)
                .read_to_vec()?;
            let response = opentelemetry_http::Response::builder()
                .status(status)
                .body(opentelemetry_http::Bytes::from(body))?;
            Ok(response)
        })
        .await?
    }
}

/// The host of an endpoint URL, for TLS's server name.
fn host_of(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// The sending side, held by the ledger.
#[derive(Clone)]
pub struct Telemetry {
    queue: mpsc::Sender<SpanRecord>,
}

impl Telemetry {
    /// Queues a span; never waits.
    pub fn record(&self, span: SpanRecord) {
        if self.queue.try_send(span).is_err() {
            warn!("span export queue full; span dropped");
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build the OTLP exporter for '{endpoint}': {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

/// The exporter task: it ends once every [`Telemetry`] is gone and the queue is exported, as
/// an SDK's `shutdown()` does; the daemon awaits it, with [`DRAIN_DEADLINE`], before exiting.
pub struct Exporter(tokio::task::JoinHandle<()>);

/// Longest the daemon waits at shutdown for queued spans to be exported.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

impl Exporter {
    /// Waits for the queue to be exported, at most [`DRAIN_DEADLINE`].
    pub async fn drain(self) {
        if tokio::time::timeout(DRAIN_DEADLINE, self.0).await.is_err() {
            warn!(
                deadline = ?DRAIN_DEADLINE,
                "spans still queued at shutdown were not all exported in time; the rest are dropped"
            );
        }
    }
}

/// Starts the exporter task on the current runtime, with health for `/readyz`. `None` when
/// nothing is to be exported (dev_fast, or no endpoint).
pub fn spawn(
    config: &TelemetryConfig,
    health: Arc<ExportHealth>,
    tls: &crate::tls::ClientTls,
) -> Result<Option<(Telemetry, Exporter)>, TelemetryError> {
    let Some(endpoint) = config
        .endpoint
        .clone()
        .filter(|_| config.mode == Mode::Strict)
    else {
        return Ok(None);
    };
    let error = |reason: String| TelemetryError {
        endpoint: endpoint.clone(),
        reason,
    };
    let exporter = match config.protocol {
        Protocol::Grpc => {
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(EXPORT_TIMEOUT);
            match host_of(&endpoint).filter(|_| endpoint.starts_with("https://")) {
                Some(host) => builder.with_tls_config(tls.grpc(&host)).build(),
                None => builder.build(),
            }
        }
        Protocol::HttpProtobuf => {
            let url = if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
                endpoint.clone()
            } else {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(UreqHttp(tls.http_agent(EXPORT_TIMEOUT)))
                .with_endpoint(url)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
        }
    }
    .map_err(|e| error(e.to_string()))?;
    let (queue, mut inbox) = mpsc::channel::<SpanRecord>(QUEUE);
    let scope = InstrumentationScope::builder("costmeter")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let export_health = health.clone();
    let endpoint_shown = endpoint.clone();
    let task = tokio::spawn(async move {
        let endpoint = endpoint_shown;
        while let Some(first) = inbox.recv().await {
            let mut batch = vec![first.into_span_data(&scope)];
            while batch.len() < BATCH {
                match inbox.try_recv() {
                    Ok(span) => batch.push(span.into_span_data(&scope)),
                    Err(_) => break,
                }
            }
            let count = batch.len();
            let outcome = tokio::time::timeout(EXPORT_TIMEOUT * 2, exporter.export(batch)).await;
            let problem = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(format!("export to {endpoint} failed: {error}")),
                Err(_) => Some(format!("export to {endpoint} timed out")),
            };
            match &problem {
                Some(problem) => {
                    warn!(spans = count, error = %problem, "span export failed; spans dropped")
                }
                None => debug!(spans = count, "spans exported"),
            }
            export_health.record(problem);
        }
    });
    let address = probe_address(&endpoint);
    tokio::spawn(async move {
        loop {
            let reachable = match &address {
                Some(address) => tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(address.as_str()),
                )
                .await
                .is_ok_and(|connected| connected.is_ok()),
                None => false,
            };
            health.reachable.store(reachable, Ordering::Relaxed);
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
    Ok(Some((Telemetry { queue }, Exporter(task))))
}

/// host:port of an endpoint URL, for the reachability probe.
fn probe_address(endpoint: &str) -> Option<String> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let authority = rest.split('/').next()?;
    if authority.contains(':') {
        Some(authority.to_string())
    } else {
        Some(format!(
            "{authority}:{}",
            if scheme == "https" { 443 } else { 80 }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_span_id("run", "r1"), derived_span_id("run", "r1"));
        assert_ne!(derived_span_id("run", "r1"), derived_span_id("task", "r1"));
        assert_ne!(derived_trace_id("run", "r1"), [0; 16]);
    }

    #[test]
    fn hex_ids_parse() {
        assert_eq!(
            hex_bytes::<8>("00f067aa0ba902b7"),
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(hex_bytes::<8>("00f0"), None);
    }

    #[test]
    fn probe_address_takes_host_and_port() {
        assert_eq!(
            probe_address("http://127.0.0.1:4317").as_deref(),
            Some("127.0.0.1:4317")
        );
        assert_eq!(
            probe_address("http://collector/v1/traces").as_deref(),
            Some("collector:80")
        );
        assert_eq!(probe_address("nonsense"), None);
    }
}

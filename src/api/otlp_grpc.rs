//! The OTLP/gRPC receiver, on its own port (`[otlp] grpc_listen`, off by default), for agents
//! whose exporter speaks only gRPC or defaults to it (Claude Code's examples use port 4317).
//! Same mapping, same ledger, same answers as OTLP/HTTP: partial successes for refused items,
//! UNAVAILABLE (retried by exporters) when the store cannot write.

use std::future::Future;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::otlp::partial_success;
use crate::ledger::LedgerHandle;
use crate::otlp::{Defaults, Mapped, mapping};

/// What the three services share.
#[derive(Clone)]
pub struct Receiver {
    pub ledger: LedgerHandle,
    pub defaults: Defaults,
    /// Bearer token exporters must send (`authorization` metadata), when configured.
    pub token: Option<String>,
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Receiver {
    fn check_token<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if crate::server::bearer_matches(self.token.as_deref(), given) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "missing or wrong bearer token: set OTEL_EXPORTER_OTLP_HEADERS=\"Authorization=Bearer <token from server.token_file>\"",
            ))
        }
    }

    /// Submits what a request mapped to; `(rejected, message)` for the partial success.
    async fn submit(&self, mapped: Mapped) -> Result<(i64, String), Status> {
        if mapped.records.is_empty() && mapped.points.is_empty() && mapped.rejected.is_empty() {
            return Ok((0, String::new()));
        }
        let answer = self.ledger.otlp(mapped).await.map_err(|problem| {
            Status::unavailable(format!(
                "{problem}; nothing from this request was recorded, retry later"
            ))
        })?;
        let (rejected, message) = partial_success(&answer);
        Ok((i64::try_from(rejected).unwrap_or(i64::MAX), message))
    }
}

fn partial<P>(rejected: i64, message: String, make: impl FnOnce(i64, String) -> P) -> Option<P> {
    (rejected > 0 || !message.is_empty()).then(|| make(rejected, message))
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.check_token(&request)?;
        let mapped = mapping::spans(request.get_ref(), &self.defaults, now_ms());
        let (rejected, message) = self.submit(mapped).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: partial(rejected, message, |rejected_spans, error_message| {
                ExportTracePartialSuccess {
                    rejected_spans,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.check_token(&request)?;
        let mapped = mapping::metrics(request.get_ref(), &self.defaults);
        let (rejected, message) = self.submit(mapped).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: partial(rejected, message, |rejected_data_points, error_message| {
                ExportMetricsPartialSuccess {
                    rejected_data_points,
                    error_message,
                }
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.check_token(&request)?;
        let mapped = mapping::logs(request.get_ref(), &self.defaults, now_ms());
        let (rejected, message) = self.submit(mapped).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: partial(rejected, message, |rejected_log_records, error_message| {
                ExportLogsPartialSuccess {
                    rejected_log_records,
                    error_message,
                }
            }),
        }))
    }
}

/// Counts the messages tonic refuses for their size before any handler runs (OUT_OF_RANGE,
/// "decoded message length too large"): the exporter drops such a batch, so the refusal is
/// told to the ledger like an HTTP 413.
#[derive(Clone)]
struct CountOversize<S> {
    inner: S,
    ledger: LedgerHandle,
    limit: u64,
}

#[derive(Clone)]
struct CountOversizeLayer {
    ledger: LedgerHandle,
    limit: u64,
}

impl<S> tower::Layer<S> for CountOversizeLayer {
    type Service = CountOversize<S>;
    fn layer(&self, inner: S) -> CountOversize<S> {
        CountOversize {
            inner,
            ledger: self.ledger.clone(),
            limit: self.limit,
        }
    }
}

/// The signal of a gRPC method path.
fn signal_of(path: &str) -> Option<crate::otlp::Signal> {
    if path.starts_with("/opentelemetry.proto.collector.trace.") {
        Some(crate::otlp::Signal::Traces)
    } else if path.starts_with("/opentelemetry.proto.collector.metrics.") {
        Some(crate::otlp::Signal::Metrics)
    } else if path.starts_with("/opentelemetry.proto.collector.logs.") {
        Some(crate::otlp::Signal::Logs)
    } else {
        None
    }
}

/// The declared size in tonic's refusal: "found N bytes".
fn declared_size(message: &str) -> Option<u64> {
    let (_, rest) = message.split_once("found ")?;
    rest.split_whitespace().next()?.parse().ok()
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for CountOversize<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let signal = signal_of(request.uri().path());
        let ledger = self.ledger.clone();
        let limit = self.limit;
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let refusal = response
                .extensions()
                .get::<Status>()
                .filter(|status| {
                    status.code() == tonic::Code::OutOfRange
                        && status.message().contains("message length too large")
                })
                .map(|status| crate::health::Refusal {
                    route: crate::health::Route::otlp_grpc,
                    reason: crate::health::RefusalReason::body_too_large,
                    bytes: declared_size(status.message()),
                    limit,
                    setting: "otlp.max_body_bytes",
                });
            if let Some(refusal) = refusal {
                let _ = ledger
                    .tell(crate::ledger::LedgerInput::Refused { refusal, signal })
                    .await;
            }
            Ok(response)
        })
    }
}

/// A connection holding one of the receiver's slots until it closes.
struct Slotted {
    stream: crate::tls::MaybeTls,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Slotted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.tcp().connect_info()
    }
}

impl tokio::io::AsyncRead for Slotted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Slotted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// How long a gRPC connection lives before it is asked to reconnect (exporters do so at once):
/// so an idle connection cannot keep its slot for ever.
const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// Accepts connections under the HTTP listener's limits: at most `max_connections` open (more
/// wait in the kernel's backlog), and a connection that sends nothing within `header_timeout`
/// is closed. Accepted connections go to tonic through the returned stream.
fn incoming(
    listener: TcpListener,
    max_connections: usize,
    header_timeout: Duration,
    tls: Option<crate::tls::ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Slotted>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "OTLP/gRPC accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let handoff = sender.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                // The HTTP/2 preface must start within the header deadline.
                let mut first = [0u8; 1];
                if tokio::time::timeout(header_timeout, stream.peek(&mut first))
                    .await
                    .is_ok_and(|peeked| peeked.is_ok_and(|n| n > 0))
                {
                    let stream =
                        match crate::tls::MaybeTls::accept(stream, tls.as_ref(), header_timeout)
                            .await
                        {
                            Ok(stream) => stream,
                            Err(error) => {
                                tracing::debug!(%error, "OTLP/gRPC TLS handshake failed");
                                return;
                            }
                        };
                    let _ = handoff
                        .send(Ok(Slotted {
                            stream,
                            _slot: slot,
                        }))
                        .await;
                }
            });
            if sender.is_closed() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Serves the three OTLP services on `listener` until `shutdown` resolves, under the HTTP
/// listener's `limits`. Messages larger than `max_message_bytes` (decompressed) are refused
/// and counted; a call gets the body deadline to finish.
pub async fn serve(
    listener: TcpListener,
    receiver: Receiver,
    max_message_bytes: usize,
    limits: crate::server::Limits,
    tls: Option<crate::tls::ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let timeout = limits.body_timeout;
    let incoming = incoming(listener, limits.max_connections, limits.header_timeout, tls);
    let counting = CountOversizeLayer {
        ledger: receiver.ledger.clone(),
        limit: u64::try_from(max_message_bytes).unwrap_or(u64::MAX),
    };
    tonic::transport::Server::builder()
        .timeout(timeout)
        .max_connection_age(MAX_CONNECTION_AGE)
        .max_connection_age_grace(timeout)
        .layer(counting)
        .add_service(
            TraceServiceServer::new(receiver.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            MetricsServiceServer::new(receiver.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            LogsServiceServer::new(receiver)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_bytes),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

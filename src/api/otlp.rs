//! OTLP/HTTP receivers: `/v1/otlp/v1/{traces,metrics,logs}` and the bare `/v1/{…}` paths.
//! Answers follow the OTLP/HTTP specification: 200 with an optional partial success, 400 for a
//! body that cannot be decoded (not retried by exporters), 503 when the store refused the
//! batch (retried), each in the request's own encoding.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::{AppState, authorized, count_rejected};
use crate::health::{RefusalReason, Route};
use crate::ledger::OtlpAnswer;
use crate::otlp::decode::{self, DecodeError, Encoding, Signal};
use crate::otlp::{Mapped, SOURCE, mapping};
use crate::server::BodyProblem;

/// gRPC status codes, which OTLP/HTTP error bodies carry.
const INVALID_ARGUMENT: i32 = 3;
const RESOURCE_EXHAUSTED: i32 = 8;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

pub async fn traces(state: State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    receive(state, headers, body, Signal::Traces).await
}

pub async fn metrics(state: State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    receive(state, headers, body, Signal::Metrics).await
}

pub async fn logs(state: State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    receive(state, headers, body, Signal::Logs).await
}

fn answer(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

fn failure(status: StatusCode, encoding: Encoding, code: i32, message: &str) -> Response {
    answer(
        status,
        encoding,
        decode::error_body(encoding, code, message),
    )
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Decodes and maps one request; the error is the status to answer with.
fn map_body(
    body: &[u8],
    encoding: Encoding,
    signal: Signal,
    defaults: &mapping::Defaults,
) -> Result<Mapped, DecodeError> {
    let now = jiff::Timestamp::now().as_millisecond();
    decode::check_items(body, encoding, signal)?;
    Ok(match signal {
        Signal::Traces => mapping::spans(
            &decode::decode::<ExportTraceServiceRequest>(body, encoding)?,
            defaults,
            now,
        ),
        Signal::Metrics => mapping::metrics(
            &decode::decode::<ExportMetricsServiceRequest>(body, encoding)?,
            defaults,
        ),
        Signal::Logs => mapping::logs(
            &decode::decode::<ExportLogsServiceRequest>(body, encoding)?,
            defaults,
            now,
        ),
    })
}

fn route_of(signal: Signal) -> Route {
    match signal {
        Signal::Traces => Route::otlp_traces,
        Signal::Metrics => Route::otlp_metrics,
        Signal::Logs => Route::otlp_logs,
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

/// Bodies at least this large are decoded on the blocking pool, not on an async worker.
const BLOCKING_DECODE_BYTES: usize = 256 * 1024;

/// Decompresses, decodes and maps a body under the decode gate: the memory that decoding takes
/// grows with the body, so large bodies wait for each other instead of adding up.
async fn decode_gated(
    state: &AppState,
    bytes: bytes::Bytes,
    headers: &HeaderMap,
    encoding: Encoding,
    signal: Signal,
) -> Result<Mapped, DecodeError> {
    let limit = state.otlp_max_body_bytes;
    let content_encoding = header_str(headers, header::CONTENT_ENCODING).map(str::to_string);
    // A compressed body's inflated size is unknown until it is inflated: weigh it as the cap.
    let weight = if content_encoding.is_some() {
        limit
    } else {
        bytes.len()
    };
    let _permit = state.decode_gate.acquire(weight).await;
    let defaults = state.otlp.clone();
    let work = move || {
        decode::decompress(bytes, content_encoding.as_deref(), limit)
            .and_then(|bytes| map_body(&bytes, encoding, signal, &defaults))
    };
    if weight < BLOCKING_DECODE_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(DecodeError::Unreadable(join.to_string())))
}

fn status_of(problem: &DecodeError) -> (StatusCode, i32) {
    match problem {
        DecodeError::UnsupportedMediaType(_) | DecodeError::UnsupportedEncoding(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, INVALID_ARGUMENT)
        }
        DecodeError::TooLarge { .. } | DecodeError::TooManyItems { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, RESOURCE_EXHAUSTED)
        }
        _ => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
    }
}

async fn receive(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
) -> Response {
    // The token first: without it nothing is counted, not even a rejection.
    if !authorized(&state, &headers) {
        return failure(
            StatusCode::UNAUTHORIZED,
            decode::encoding_of(header_str(&headers, header::CONTENT_TYPE))
                .unwrap_or(Encoding::Json),
            UNAUTHENTICATED,
            "missing or wrong bearer token: set OTEL_EXPORTER_OTLP_HEADERS=\"Authorization=Bearer <token from server.token_file>\"",
        );
    }
    let encoding = match decode::encoding_of(header_str(&headers, header::CONTENT_TYPE)) {
        Ok(encoding) => encoding,
        Err(problem) => {
            super::blocked(&state, route_of(signal), RefusalReason::content_type).await;
            count_rejected(&state, SOURCE, &["unknown"]);
            return failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Encoding::Json,
                INVALID_ARGUMENT,
                &problem.to_string(),
            );
        }
    };
    let limit = state.otlp_max_body_bytes;
    let decoded = match crate::server::read_body(body, limit).await {
        Ok(bytes) => decode_gated(&state, bytes, &headers, encoding, signal).await,
        Err(BodyProblem::TooLarge) => Err(DecodeError::TooLarge { limit }),
        Err(BodyProblem::TimedOut) => {
            count_rejected(&state, SOURCE, &["unknown"]);
            return failure(
                StatusCode::REQUEST_TIMEOUT,
                encoding,
                UNAVAILABLE,
                "the body did not arrive within server.body_timeout; nothing was recorded",
            );
        }
        Err(BodyProblem::Broken(why)) => Err(DecodeError::Unreadable(why)),
    };
    let mapped = match decoded {
        Ok(mapped) => mapped,
        Err(problem) => {
            if let DecodeError::TooManyItems { .. } = problem {
                super::blocked(&state, route_of(signal), RefusalReason::too_many_items).await;
            }
            if let DecodeError::TooLarge { limit } = problem {
                super::refuse_oversize(
                    &state,
                    route_of(signal),
                    content_length(&headers),
                    limit,
                    "otlp.max_body_bytes",
                    Some(signal),
                )
                .await;
            }
            count_rejected(&state, SOURCE, &["unknown"]);
            let (status, code) = status_of(&problem);
            return failure(status, encoding, code, &problem.to_string());
        }
    };
    if mapped.records.is_empty() && mapped.points.is_empty() && mapped.rejected.is_empty() {
        // Nothing here meters anything (plain spans, other metrics): no trip to the ledger.
        return answer(
            StatusCode::OK,
            encoding,
            decode::success_body(signal, encoding, 0, ""),
        );
    }
    match state.ledger.otlp(mapped).await {
        Ok(result) => {
            let (rejected, message) = partial_success(&result);
            answer(
                StatusCode::OK,
                encoding,
                decode::success_body(signal, encoding, rejected, &message),
            )
        }
        Err(problem) => failure(
            StatusCode::SERVICE_UNAVAILABLE,
            encoding,
            UNAVAILABLE,
            &format!(
                "{problem}; nothing from this request was recorded, the exporter should retry"
            ),
        ),
    }
}

/// Most rejection messages quoted in one partial success.
const QUOTED_REJECTIONS: usize = 5;

/// The partial-success count and message of an answer: the first few problems, then how many
/// more.
pub(crate) fn partial_success(answer: &OtlpAnswer) -> (u64, String) {
    let mut message = answer
        .rejected
        .iter()
        .take(QUOTED_REJECTIONS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if answer.rejected.len() > QUOTED_REJECTIONS {
        message.push_str(&format!(
            "; and {} more",
            answer.rejected.len() - QUOTED_REJECTIONS
        ));
    }
    (
        u64::try_from(answer.rejected.len()).unwrap_or(u64::MAX),
        message,
    )
}

//! HTTP routes. Handlers read shared state and hand work to the ledger; they compute nothing
//! themselves.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::oneshot;

use crate::daemon::Health;
use crate::ingest::{self, BodyError, event};
use crate::ledger::{LedgerInput, LedgerSender};
use crate::metrics::Metrics;
use crate::metrics::exposition::{Format, render};

/// What every handler may read.
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub ledger: LedgerSender,
    /// Bearer token `/v1/*` writes must present, when configured.
    pub token: Option<String>,
    pub max_body_bytes: usize,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/events", post(post_events))
        .route("/v1/pricing/status", get(pricing_status))
        .with_state(state)
}

/// A JSON error body: `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// Whether a write carries the configured bearer token (compared in time independent of
/// where it differs). Always true when no token is configured.
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(expected) = &state.token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let difference = given
        .bytes()
        .zip(expected.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    given.len() == expected.len() && difference == 0
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send 'Authorization: Bearer <token from server.token_file>'",
    )
}

/// `POST /v1/events`: one object, an array, or NDJSON. 202 when at least one event was
/// stored or already known; 400 when none was acceptable; 503 when the store failed (then
/// nothing was recorded and the whole request may be retried).
async fn post_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            count_rejected(&state, vec!["unknown"]).await;
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body exceeds {} bytes (server.max_body_bytes); split it into smaller batches",
                    state.max_body_bytes
                ),
            );
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let items = match ingest::split_body(&bytes, content_type) {
        Ok(items) => items,
        Err(problem) => {
            count_rejected(&state, vec!["unknown"]).await;
            let status = match problem {
                BodyError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, problem.to_string());
        }
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let mut events = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    let mut rejected_types = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let checked = match item {
            Ok(value) => {
                event::validate(value, now).map_err(|problem| (problem, event::type_label(value)))
            }
            Err(problem) => Err((problem.clone(), "unknown")),
        };
        match checked {
            Ok(valid) => events.push(valid),
            Err((problem, kind)) => {
                rejected_types.push(kind);
                rejected.push(json!({ "index": index, "error": problem }));
            }
        }
    }
    if events.is_empty() {
        count_rejected(&state, rejected_types).await;
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "accepted": 0, "duplicates": 0, "rejected": rejected })),
        )
            .into_response();
    }
    let (reply, answer) = oneshot::channel();
    let sent = state
        .ledger
        .send(LedgerInput::Events {
            source: "http",
            events,
            rejected: rejected_types,
            reply,
        })
        .await;
    let stored = match sent {
        Ok(()) => answer
            .await
            .unwrap_or_else(|_| Err("the ledger stopped".to_string())),
        Err(_) => Err("the ledger stopped".to_string()),
    };
    match stored {
        Ok(fresh) => {
            let accepted = fresh.iter().filter(|new| **new).count();
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({
                    "accepted": accepted,
                    "duplicates": fresh.len() - accepted,
                    "rejected": rejected,
                })),
            )
                .into_response()
        }
        Err(problem) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the store cannot take writes ({problem}); nothing from this request was recorded, retry later"
            ),
        ),
    }
}

/// Tells the ledger about events rejected before reaching it, so `events_total` counts them.
async fn count_rejected(state: &AppState, types: Vec<&'static str>) {
    let (reply, _) = oneshot::channel();
    let _ = state
        .ledger
        .send(LedgerInput::Events {
            source: "http",
            events: Vec::new(),
            rejected: types,
            reply,
        })
        .await;
}

/// `GET /v1/pricing/status`: the price table's health and the models priced at 0.
async fn pricing_status(State(state): State<Arc<AppState>>) -> Response {
    let (reply, answer) = oneshot::channel();
    if state
        .ledger
        .send(LedgerInput::PricingStatus(reply))
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the ledger stopped");
    }
    match answer.await {
        Ok(status) => axum::Json(status).into_response(),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the ledger stopped"),
    }
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let body = render(state.metrics.registry(), format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// Alive: the process answers HTTP.
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Ready: every check passes. The body lists each check so an operator sees which one failed.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let checks = state.health.checks();
    let ready = checks.iter().all(|(_, ok, _)| *ok);
    let body = json!({
        "ready": ready,
        "checks": checks
            .iter()
            .map(|(name, ok, detail)| json!({"name": name, "ok": ok, "detail": detail}))
            .collect::<Vec<_>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

//! HTTP routes. Handlers read shared state and hand work to the ledger; they compute nothing
//! themselves.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::daemon::Health;
use crate::metrics::Metrics;
use crate::metrics::exposition::{Format, render};

/// What every handler may read.
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
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

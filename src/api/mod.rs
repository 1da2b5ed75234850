//! HTTP routes. Handlers are thin: they parse the request, hand writes to the ledger, answer
//! reads from what is published beside it (the ledger's view, the spend rollup, a reader
//! connection), and put the answer in its `wire` shape. Decisions live in their modules
//! (`admission`, `alerts`, `runs`, `report`).
//!
//! - [`events`]: `POST /v1/events`.
//! - [`control`]: `POST /v1/alerts`, `POST /v1/reload`.
//! - [`views`]: the reads: status, page, budgets, the admission check, report, runs, pricing,
//!   readiness, `/metrics`.
//! - [`otlp`], [`otlp_grpc`]: the OTLP receivers; [`guard`]: who may call at all.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use tokio::sync::oneshot;

use crate::health::{Health, Refusal, RefusalReason, Route};
use crate::ledger::{LedgerHandle, LedgerInput, LedgerUnavailable};
use crate::metrics::Metrics;
use crate::wire::ErrorBody;

mod control;
mod events;
mod guard;
mod otlp;
pub mod otlp_grpc;
mod views;

/// What every handler may read.
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub ledger: LedgerHandle,
    /// Bearer token `/v1/*` writes must present, when configured.
    pub token: Option<String>,
    pub max_body_bytes: usize,
    /// Names of the configured targets, for Alertmanager payloads.
    pub targets: Vec<String>,
    /// The names this sidecar answers to in an alert's `instance` label.
    pub instances: Vec<String>,
    /// When the daemon started, for `/v1/status`.
    pub started: std::time::SystemTime,
    /// Asks the daemon's main loop to reload the config file.
    pub reload: tokio::sync::mpsc::Sender<oneshot::Sender<Result<String, String>>>,
    /// How OTLP usage that names no agent is attributed.
    pub otlp: crate::otlp::Defaults,
    /// `[otlp] max_body_bytes`, decompressed.
    pub otlp_max_body_bytes: usize,
    /// Bounds the OTLP bytes decoded at once.
    pub decode_gate: Arc<crate::otlp::DecodeGate>,
    /// `[server] allowed_hosts`.
    pub allowed_hosts: Vec<String>,
    /// Store reads beside the ledger.
    pub reads: Arc<crate::reads::Reads>,
    /// Spend by hour, kept by the ledger, for the status and the page.
    pub spend: crate::spend::SharedSpend,
    /// The LLM API proxy, when `[proxy] enabled`.
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(views::metrics))
        .route("/healthz", get(views::healthz))
        .route("/readyz", get(views::readyz))
        .route("/v1/events", post(events::post_events))
        .route("/v1/pricing/status", get(views::pricing_status))
        .route("/v1/budgets", get(views::budgets))
        .route("/v1/budgets/check", get(views::budgets_check))
        .route("/v1/alerts", post(control::alerts))
        .route("/v1/reload", post(control::reload))
        .route("/v1/report", get(views::report))
        .route("/v1/status", get(views::status))
        .route("/", get(views::page))
        .route("/v1/runs", get(views::runs))
        .route("/v1/runs/{id}", get(views::run))
        .route("/v1/tasks/{id}", get(views::task))
        .route("/v1/otlp/v1/traces", post(otlp::traces))
        .route("/v1/otlp/v1/metrics", post(otlp::metrics))
        .route("/v1/otlp/v1/logs", post(otlp::logs))
        // A stock exporter given only the base URL appends the signal path itself.
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/metrics", post(otlp::metrics))
        .route("/v1/logs", post(otlp::logs))
        .route("/proxy/{*rest}", any(proxy))
        .route("/proxy", any(proxy))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .with_state(state)
}

/// Bodies `/v1/alerts` and `/v1/reload` take.
const JSON: &[&str] = &["application/json"];
/// Bodies `/v1/events` takes.
const EVENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/jsonlines",
];

/// `/proxy/<name>/…`: the proxy's, when it is on.
async fn proxy(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    match &state.proxy {
        Some(proxy) => proxy.handle(request).await,
        None => error(
            StatusCode::NOT_FOUND,
            "the LLM API proxy is off: set [proxy] enabled = true (README, \"The proxy\")",
        ),
    }
}

/// A JSON error body: `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            error: message.into(),
        }),
    )
        .into_response()
}

/// Whether a write carries the configured bearer token. Always true when none is configured.
fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    crate::server::bearer_matches(
        state.token.as_deref(),
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send 'Authorization: Bearer <token from server.token_file>'",
    )
}

/// The gate every JSON write passes: the bearer token, an allowed content type, and a body
/// within `[server] max_body_bytes` (one over it is counted, logged and shown before the 413).
/// The body, or the answer that refuses it.
async fn write_body(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
    route: Route,
    types: &[&str],
) -> Result<bytes::Bytes, Response> {
    if !authorized(state, headers) {
        return Err(unauthorized());
    }
    if !guard::content_type_is(headers, types) {
        blocked(state, route, RefusalReason::content_type).await;
        return Err(guard::wrong_content_type(headers, types));
    }
    match crate::server::read_body(body, state.max_body_bytes).await {
        Ok(bytes) => Ok(bytes),
        Err(problem) => {
            if matches!(problem, crate::server::BodyProblem::TooLarge) {
                let declared = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                refuse_oversize(
                    state,
                    route,
                    declared,
                    state.max_body_bytes,
                    "server.max_body_bytes",
                    None,
                )
                .await;
            }
            Err(body_problem(problem, state.max_body_bytes))
        }
    }
}

/// The one answer to a ledger that could not answer: 503, nothing recorded, retry.
fn unavailable(problem: &LedgerUnavailable) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{problem}; nothing from this request was recorded, retry later"),
    )
}

/// The answer to a body that could not be read.
fn body_problem(problem: crate::server::BodyProblem, limit: usize) -> Response {
    use crate::server::BodyProblem;
    match problem {
        BodyProblem::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body exceeds {limit} bytes (server.max_body_bytes); split it into smaller batches"
            ),
        ),
        BodyProblem::TimedOut => error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive within server.body_timeout; nothing was recorded, send it again",
        ),
        BodyProblem::Broken(why) => error(
            StatusCode::BAD_REQUEST,
            format!("the body could not be read ({why}); nothing was recorded"),
        ),
    }
}

/// Tells the ledger about a body refused for its size, so it is counted, logged and shown.
async fn refuse_oversize(
    state: &AppState,
    route: Route,
    bytes: Option<u64>,
    limit: usize,
    setting: &'static str,
    signal: Option<crate::otlp::Signal>,
) {
    let refusal = Refusal {
        route,
        reason: RefusalReason::body_too_large,
        bytes,
        limit: u64::try_from(limit).unwrap_or(u64::MAX),
        setting,
    };
    let _ = state
        .ledger
        .tell(LedgerInput::Refused { refusal, signal })
        .await;
}

/// Counts a request the guard or a content-type check refused, and logs it at the 1st, 2nd,
/// 4th, 8th… time, so a flood fills neither the log nor the ledger's inbox.
async fn blocked(state: &AppState, route: Route, reason: RefusalReason) {
    let count = state.metrics.count_refused(route, reason);
    if count.is_power_of_two() {
        tracing::warn!(
            route = route.label(),
            reason = reason.label(),
            count,
            "request refused before its handler (web page, foreign Host, content type or item count); logged at the 1st, 2nd, 4th, 8th… time"
        );
    }
}

/// Counts events rejected before reaching the ledger, so `events_total` shows them.
fn count_rejected(state: &AppState, source: &'static str, types: &[&'static str]) {
    state.metrics.count_rejected(source, types);
}

/// Runs a read on a reader connection beside the ledger (never through it).
async fn read<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, Response> {
    state.reads.run(work).await.map_err(|problem| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the store: {problem}"),
        )
    })
}

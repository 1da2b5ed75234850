//! HTTP routes. Handlers read shared state and hand work to the ledger; they compute nothing
//! themselves.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::oneshot;

use crate::budget::{BudgetStatus, State as BudgetState};
use crate::health::{Health, Refusal, RefusalReason, Route};
use crate::ingest::{self, BodyError, event};
use crate::ledger::{LedgerHandle, LedgerInput, LedgerUnavailable};
use crate::metrics::Metrics;
use crate::metrics::exposition::{Format, render};
use crate::runs::RunFilter;

mod guard;
mod otlp;
pub mod otlp_grpc;

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
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/events", post(post_events))
        .route("/v1/pricing/status", get(pricing_status))
        .route("/v1/budgets", get(budgets))
        .route("/v1/budgets/check", get(budgets_check))
        .route("/v1/alerts", post(alerts))
        .route("/v1/reload", post(reload))
        .route("/v1/report", get(report))
        .route("/v1/status", get(status))
        .route("/", get(page))
        .route("/v1/runs", get(runs))
        .route("/v1/runs/{id}", get(run))
        .route("/v1/tasks/{id}", get(task))
        .route("/v1/otlp/v1/traces", post(otlp::traces))
        .route("/v1/otlp/v1/metrics", post(otlp::metrics))
        .route("/v1/otlp/v1/logs", post(otlp::logs))
        // A stock exporter given only the base URL appends the signal path itself.
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/metrics", post(otlp::metrics))
        .route("/v1/logs", post(otlp::logs))
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

/// A JSON error body: `{"error": "..."}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
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
    if !guard::content_type_is(&headers, EVENT_TYPES) {
        blocked(&state, Route::events, RefusalReason::content_type).await;
        return guard::wrong_content_type(&headers, EVENT_TYPES);
    }
    let bytes = match crate::server::read_body(body, state.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(problem) => {
            if matches!(problem, crate::server::BodyProblem::TooLarge) {
                let declared = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                refuse_oversize(
                    &state,
                    Route::events,
                    declared,
                    state.max_body_bytes,
                    "server.max_body_bytes",
                    None,
                )
                .await;
            }
            count_rejected(&state, "http", vec!["unknown"]).await;
            return body_problem(problem, state.max_body_bytes);
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let items = match ingest::split_body(&bytes, content_type) {
        Ok(items) => items,
        Err(problem) => {
            count_rejected(&state, "http", vec!["unknown"]).await;
            let status = match problem {
                BodyError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, problem.to_string());
        }
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let mut events = Vec::with_capacity(items.len());
    // The request index of each event sent on, for refusals the ledger makes.
    let mut indices = Vec::with_capacity(items.len());
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
            Ok(valid) => {
                events.push(valid);
                indices.push(index);
            }
            Err((problem, kind)) => {
                rejected_types.push(kind);
                rejected.push(json!({ "index": index, "error": problem }));
            }
        }
    }
    if events.is_empty() {
        count_rejected(&state, "http", rejected_types).await;
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "accepted": 0, "duplicates": 0, "rejected": rejected })),
        )
            .into_response();
    }
    match state.ledger.events("http", events, rejected_types).await {
        Ok(answer) => {
            let accepted = answer.fresh.iter().filter(|new| **new).count();
            for (sent, problem) in answer.refused {
                let index = indices.get(sent).copied().unwrap_or(sent);
                rejected.push(json!({ "index": index, "error": problem }));
            }
            rejected.sort_by_key(|r| r["index"].as_u64());
            let status = if answer.fresh.is_empty() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::ACCEPTED
            };
            (
                status,
                axum::Json(json!({
                    "accepted": accepted,
                    "duplicates": answer.fresh.len() - accepted,
                    "rejected": rejected,
                })),
            )
                .into_response()
        }
        Err(problem) => unavailable(&problem),
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

/// Tells the ledger about events rejected before reaching it, so `events_total` counts them.
async fn count_rejected(state: &AppState, source: &'static str, types: Vec<&'static str>) {
    let (reply, _) = oneshot::channel();
    let _ = state
        .ledger
        .tell(LedgerInput::Events {
            source,
            events: Vec::new(),
            rejected: types,
            reply,
        })
        .await;
}

/// `GET /v1/pricing/status`: the price table's health and the models priced at 0.
async fn pricing_status(State(state): State<Arc<AppState>>) -> Response {
    match state.ledger.pricing_status().await {
        Ok(status) => axum::Json(status).into_response(),
        Err(problem) => unavailable(&problem),
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

/// Asks the ledger for every budget's state.
async fn budget_statuses(state: &AppState) -> Result<Vec<BudgetStatus>, Response> {
    state
        .ledger
        .budgets()
        .await
        .map_err(|problem| unavailable(&problem))
}

/// `GET /v1/budgets`: every budget with limit, used, ratio, state and window.
async fn budgets(State(state): State<Arc<AppState>>) -> Response {
    match budget_statuses(&state).await {
        Ok(statuses) => axum::Json(json!({ "budgets": statuses })).into_response(),
        Err(response) => response,
    }
}

#[derive(Debug, serde::Deserialize)]
struct CheckQuery {
    agent: Option<String>,
}

/// `GET /v1/budgets/check?agent=…`: may this agent spend? 200 with what remains, or 429
/// naming the exceeded budget. Usage reported after the call it pays for can overshoot; this
/// lets an agent ask before the call.
async fn budgets_check(
    State(state): State<Arc<AppState>>,
    Query(query): Query<CheckQuery>,
) -> Response {
    let statuses = match budget_statuses(&state).await {
        Ok(statuses) => statuses,
        Err(response) => return response,
    };
    let applies = |status: &BudgetStatus| match (&query.agent, &status.agent) {
        (_, None) => true,
        (Some(agent), Some(scoped)) => agent == scoped,
        (None, Some(_)) => true,
    };
    let relevant: Vec<&BudgetStatus> = statuses.iter().filter(|s| applies(s)).collect();
    let exceeded: Vec<&&BudgetStatus> = relevant
        .iter()
        .filter(|s| s.state == BudgetState::Exceeded)
        .collect();
    let remaining: Vec<serde_json::Value> = relevant
        .iter()
        .map(|s| json!({"budget": s.name, "resource": s.resource, "remaining": s.remaining, "limit": s.limit, "used": s.used, "state": s.state}))
        .collect();
    if let Some(first) = exceeded.first() {
        let names: Vec<&str> = exceeded.iter().map(|s| s.name.as_str()).collect();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({
                "allowed": false,
                "error": format!("budget '{}' exceeded: {} of {} {} used", first.name, first.used, first.limit, first.resource.label()),
                "exceeded": names,
                "budgets": remaining,
            })),
        )
            .into_response();
    }
    axum::Json(json!({ "allowed": true, "agent": query.agent, "budgets": remaining }))
        .into_response()
}

/// `POST /v1/alerts`: a firing alert labelled `costmeter_action="soft_kill"` and
/// `target="…"` stops that target if it is one of this sidecar's. This is how fleet-wide
/// budgets work: Prometheus sums every sidecar, the rule fires, Alertmanager tells each one.
async fn alerts(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    if !guard::content_type_is(&headers, JSON) {
        blocked(&state, Route::alerts, RefusalReason::content_type).await;
        return guard::wrong_content_type(&headers, JSON);
    }
    let body = match crate::server::read_body(body, state.max_body_bytes).await {
        Ok(body) => body,
        Err(problem) => {
            if matches!(problem, crate::server::BodyProblem::TooLarge) {
                refuse_oversize(
                    &state,
                    Route::alerts,
                    None,
                    state.max_body_bytes,
                    "server.max_body_bytes",
                    None,
                )
                .await;
            }
            return body_problem(problem, state.max_body_bytes);
        }
    };
    let decisions = match crate::alerts::decide(&body, &state.targets) {
        Ok(decisions) => decisions,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    let mut actions = Vec::new();
    let mut ignored = Vec::new();
    for decision in decisions {
        match decision.action {
            Ok(order) => {
                let target = order.target.clone();
                if let Err(problem) = state.ledger.tell(LedgerInput::Enforce(order)).await {
                    return unavailable(&problem);
                }
                actions.push(json!({"alert": decision.alert, "target": target, "action": "soft_kill", "fingerprint": decision.fingerprint}));
            }
            Err(reason) => ignored.push(
                json!({"alert": decision.alert, "target": decision.target, "reason": reason}),
            ),
        }
    }
    axum::Json(json!({ "actions": actions, "ignored": ignored })).into_response()
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

/// The cost report over the last `window_ms`, read beside the ledger with the budgets' states.
async fn report_over(state: &AppState, window_ms: i64) -> Result<crate::report::Report, Response> {
    let budgets = budget_statuses(state).await?;
    let now = jiff::Timestamp::now().as_millisecond();
    read(state, move |store| {
        store.report(now - window_ms, now, budgets)
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
struct RunsQuery {
    status: Option<String>,
    agent: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// Default and largest page of `GET /v1/runs`.
const RUNS_PAGE: usize = 50;
const RUNS_PAGE_MAX: usize = 500;

/// `GET /v1/runs?status=&agent=&since=&limit=&cursor=`: runs, newest first.
async fn runs(State(state): State<Arc<AppState>>, Query(query): Query<RunsQuery>) -> Response {
    let status = match query.status.as_deref() {
        None => None,
        Some("failed") => Some("failure".to_string()),
        Some(s @ ("running" | "success" | "failure" | "cancelled" | "timeout")) => {
            Some(s.to_string())
        }
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "status '{other}' is not one of running, success, failure (or failed), cancelled, timeout"
                ),
            );
        }
    };
    let since_ms = match query.since.as_deref() {
        None => None,
        Some(text) => match (
            humantime::parse_duration(text),
            text.parse::<jiff::Timestamp>(),
        ) {
            (Ok(ago), _) => Some(
                jiff::Timestamp::now().as_millisecond()
                    - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX),
            ),
            (_, Ok(at)) => Some(at.as_millisecond()),
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "since '{text}' is neither a duration such as \"7d\" nor an RFC 3339 time"
                    ),
                );
            }
        },
    };
    let limit = query.limit.unwrap_or(RUNS_PAGE);
    if !(1..=RUNS_PAGE_MAX).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit {limit} must be between 1 and {RUNS_PAGE_MAX}"),
        );
    }
    let after = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => match crate::runs::decode_cursor(cursor) {
            Some(after) => Some(after),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "cursor is not one this API gave out; start again without it",
                );
            }
        },
    };
    let filter = RunFilter {
        status,
        agent: query.agent,
        since_ms,
        limit,
        after,
    };
    match read(&state, move |store| store.runs(&filter)).await {
        Ok(page) => axum::Json(page).into_response(),
        Err(response) => response,
    }
}

/// `GET /v1/runs/{id}`: one run with per-task timings and cost records.
async fn run(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let wanted = id.clone();
    match read(&state, move |store| store.run(&wanted)).await {
        Ok(Some(run)) => axum::Json(run).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run '{id}'")),
        Err(response) => response,
    }
}

/// `GET /v1/tasks/{id}`: one task and its cost_record.
async fn task(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let wanted = id.clone();
    match read(&state, move |store| store.task(&wanted)).await {
        Ok(Some(task)) => axum::Json(task).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no task '{id}'")),
        Err(response) => response,
    }
}

/// `POST /v1/reload`: re-reads the config file, as SIGHUP does (in `exec` mode SIGHUP goes to
/// the command, so this is the way there). A bad file keeps the running config: 400 says why.
async fn reload(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return unauthorized();
    }
    if !guard::content_type_is(&headers, JSON) {
        blocked(&state, Route::reload, RefusalReason::content_type).await;
        return guard::wrong_content_type(&headers, JSON);
    }
    let (reply, answer) = oneshot::channel();
    if state.reload.send(reply).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "costmeter is shutting down",
        );
    }
    match answer.await {
        Ok(Ok(detail)) => axum::Json(json!({ "reloaded": true, "detail": detail })).into_response(),
        Ok(Err(problem)) => error(StatusCode::BAD_REQUEST, problem),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "costmeter is shutting down",
        ),
    }
}

#[derive(Debug, serde::Deserialize)]
struct ReportQuery {
    window: Option<String>,
    format: Option<String>,
}

/// `GET /v1/report?window=7d&format=md|json`: the cost report (ADR 19-O5).
async fn report(State(state): State<Arc<AppState>>, Query(query): Query<ReportQuery>) -> Response {
    let window = query.window.as_deref().unwrap_or("7d");
    let window_ms = match humantime::parse_duration(window) {
        Ok(d) if d.as_secs() >= 60 => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("window '{window}' is not a duration of at least 1m such as \"7d\""),
            );
        }
    };
    let markdown = match query.format.as_deref() {
        None | Some("json") => false,
        Some("md" | "markdown") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("format '{other}' is not md or json"),
            );
        }
    };
    match report_over(&state, window_ms).await {
        Ok(report) if markdown => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report.markdown(),
        )
            .into_response(),
        Ok(report) => axum::Json(report).into_response(),
        Err(response) => response,
    }
}

/// `GET /v1/status`: is costmeter working, what has the agent spent, where do budgets stand.
async fn status(State(state): State<Arc<AppState>>) -> Response {
    match overview(&state).await {
        Ok((day, week, budgets)) => {
            axum::Json(status_json(&state, &day, &week, &budgets)).into_response()
        }
        Err(response) => response,
    }
}

/// The 24-hour and 7-day reports and the budgets, which the status and the page both show.
async fn overview(
    state: &AppState,
) -> Result<
    (
        crate::report::Report,
        crate::report::Report,
        Vec<BudgetStatus>,
    ),
    Response,
> {
    let budgets = budget_statuses(state).await?;
    let now = jiff::Timestamp::now().as_millisecond();
    // From the hourly rollup the ledger keeps: no scan of raw events, however many.
    let day = crate::spend::report(&state.spend, now - 86_400_000, now, budgets.clone());
    let week = crate::spend::report(&state.spend, now - 7 * 86_400_000, now, budgets.clone());
    Ok((day, week, budgets))
}

/// `GET /`: the status page.
async fn page(State(state): State<Arc<AppState>>) -> Response {
    let (day, week, budget_list) = match overview(&state).await {
        Ok(overview) => overview,
        Err(response) => return response,
    };
    let status = status_json(&state, &day, &week, &budget_list);
    let budgets = json!({ "budgets": budget_list });
    let filter = RunFilter {
        limit: 10,
        ..RunFilter::default()
    };
    let runs = match read(&state, move |store| store.runs(&filter)).await {
        Ok(runs) => runs,
        Err(response) => return response,
    };
    let targets = state.metrics.target_figures(&state.targets);
    let rendered = tokio::task::spawn_blocking(move || {
        crate::page::render(
            &status,
            &budgets,
            &serde_json::to_value(week).unwrap_or_default(),
            &serde_json::to_value(day).unwrap_or_default(),
            &serde_json::to_value(runs).unwrap_or_default(),
            &targets,
        )
    })
    .await;
    match rendered {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(problem) => error(StatusCode::INTERNAL_SERVER_ERROR, problem.to_string()),
    }
}

fn status_json(
    state: &AppState,
    day: &crate::report::Report,
    week: &crate::report::Report,
    budgets: &[BudgetStatus],
) -> serde_json::Value {
    let checks = state.health.checks();
    let report = state.health.report();
    let uptime = state.started.elapsed().map_or(0.0, |d| d.as_secs_f64());
    let started = jiff::Timestamp::try_from(state.started)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let usd_budgets = budgets
        .iter()
        .any(|b| b.resource == crate::budget::Resource::Usd);
    let problems = state
        .health
        .problems(jiff::Timestamp::now().as_millisecond(), usd_budgets);
    let mut hints = Vec::new();
    if week.total_tokens == 0 && week.spend.is_empty() {
        hints.push("no LLM usage reported in the last 7 days: POST llm_usage events to /v1/events, or point the agent's OpenTelemetry exporter at this daemon (OTEL_EXPORTER_OTLP_ENDPOINT=http://<listen>/v1/otlp; README, \"Reporting usage\" and \"OpenTelemetry (OTLP)\")");
    }
    if budgets.is_empty() {
        hints.push("no budgets configured: add [budgets] or [[budget]] to the config to warn and stop at a limit");
    }
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now": jiff::Timestamp::now().to_string(),
        "started": started,
        "uptime_seconds": uptime,
        "ready": checks.iter().all(|(_, ok, _)| *ok),
        "checks": checks.iter().map(|(name, ok, detail)| json!({"name": name, "ok": ok, "detail": detail})).collect::<Vec<_>>(),
        "problems": problems,
        "spend": {
            "last_24h": {"usd": day.total_usd, "tokens": day.total_tokens},
            "last_7d": {"usd": week.total_usd, "tokens": week.total_tokens},
        },
        "budgets": budgets.iter().map(|b| json!({"name": b.name, "resource": b.resource, "used": b.used, "limit": b.limit, "ratio": b.ratio, "state": b.state})).collect::<Vec<_>>(),
        "targets": state.targets,
        "report": {
            "configured": report.0,
            "last_success": report.1.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()).map(|t| t.to_string()),
            "last_error": report.2,
        },
        "hints": hints,
    })
}

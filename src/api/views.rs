//! The reads. None goes through the ledger's inbox: budget states and the price table's health
//! come from the view the ledger publishes, spend figures from the hourly rollup, runs, tasks
//! and report details from a reader connection. A slow read never delays an acknowledgement.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, error, read};
use crate::budget::{BudgetStatus, Resource};
use crate::metrics::exposition::{Format, render};
use crate::report::{Report, ReportQuery};
use crate::runs::{RunFilter, RunsQuery};
use crate::wire::{BudgetBrief, BudgetList, Readiness, Spend, SpendWindows, Status};

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// Most resource samples the page reads: an hour of 1 s samples of 20 targets.
const PAGE_SAMPLES: usize = 72_000;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let body = render(state.metrics.registry(), format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// Alive: the process answers HTTP.
pub(super) async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Ready: every check passes. The body lists each check so an operator sees which one failed.
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let checks = state.health.checks();
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(Readiness { ready, checks })).into_response()
}

/// `GET /v1/pricing/status`: the price table's health and the models priced at 0.
pub(super) async fn pricing_status(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(state.ledger.view().pricing.as_ref()).into_response()
}

/// `GET /v1/budgets`: every budget with limit, used, ratio, state and window.
pub(super) async fn budgets(State(state): State<Arc<AppState>>) -> Response {
    let budgets = state.ledger.view().budgets.clone();
    axum::Json(BudgetList { budgets }).into_response()
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct CheckQuery {
    agent: Option<String>,
}

/// `GET /v1/budgets/check?agent=…`: may this agent spend? 200 with what remains, or 402
/// naming the exceeded budget. Usage reported after the call it pays for can overshoot; this
/// lets an agent ask before the call.
pub(super) async fn budgets_check(
    State(state): State<Arc<AppState>>,
    Query(query): Query<CheckQuery>,
) -> Response {
    let view = state.ledger.view();
    let answer = crate::admission::check(query.agent.as_deref(), &view.budgets);
    let status = if answer.allowed {
        StatusCode::OK
    } else {
        // Not 429: clients retry that (the official SDKs do, and agents loop on it); a budget
        // does not free up by asking again.
        crate::proxy::errors::REFUSAL
    };
    (status, axum::Json(answer)).into_response()
}

/// The cost report over [from_ms, to_ms). Within the rollup's reach (eight days) the spend
/// lines are its whole hours plus the raw events of the first, partial hour; beyond it, the
/// store is scanned. Either way tasks and failures come from a reader connection.
async fn report_over(
    state: &AppState,
    from_ms: i64,
    to_ms: i64,
    budgets: Vec<BudgetStatus>,
) -> Result<Report, Response> {
    if !crate::spend::covers(from_ms, to_ms) {
        return read(state, move |store| store.report(from_ms, to_ms, budgets)).await;
    }
    let whole = crate::spend::next_hour(from_ms);
    let mut lines = crate::spend::lines(&state.spend, whole, to_ms);
    let mut confidence = std::collections::BTreeMap::new();
    crate::spend::confidence(&state.spend, whole, to_ms, &mut confidence);
    let (head, (top_tasks, failures), head_confidence) = read(state, move |store| {
        Ok((
            store.raw_spend_lines(from_ms, whole)?,
            store.report_details(from_ms, to_ms)?,
            store.cost_confidence(from_ms, whole)?,
        ))
    })
    .await?;
    lines.extend(head);
    for line in head_confidence {
        let slot = confidence.entry(line.confidence).or_default();
        slot.0 += line.events;
        slot.1 += line.usd;
    }
    let mut report = Report::assemble(from_ms, to_ms, lines, top_tasks, failures, budgets);
    report.cost_confidence = confidence
        .into_iter()
        .map(
            |(confidence, (events, usd))| crate::report::ConfidenceLine {
                confidence,
                events,
                usd,
            },
        )
        .collect();
    Ok(report)
}

/// `GET /v1/report?window=7d&format=md|json`: the cost report (ADR 19-O5).
pub(super) async fn report(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ReportQuery>,
) -> Response {
    let (window_ms, markdown) = match query.parse() {
        Ok(parsed) => parsed,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    let budgets = state.ledger.view().budgets.clone();
    let now = now_ms();
    match report_over(&state, now - window_ms, now, budgets).await {
        Ok(report) if markdown => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report.markdown(),
        )
            .into_response(),
        Ok(report) => axum::Json(report).into_response(),
        Err(response) => response,
    }
}

/// `GET /v1/runs?status=&agent=&since=&limit=&cursor=`: runs, newest first.
pub(super) async fn runs(
    State(state): State<Arc<AppState>>,
    Query(query): Query<RunsQuery>,
) -> Response {
    let filter = match RunFilter::from_query(query, now_ms()) {
        Ok(filter) => filter,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    match read(&state, move |store| store.runs(&filter)).await {
        Ok(page) => axum::Json(page).into_response(),
        Err(response) => response,
    }
}

/// `GET /v1/runs/{id}`: one run with per-task timings and cost records.
pub(super) async fn run(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let wanted = id.clone();
    match read(&state, move |store| store.run(&wanted)).await {
        Ok(Some(run)) => axum::Json(run).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run '{id}'")),
        Err(response) => response,
    }
}

/// `GET /v1/tasks/{id}`: one task and its cost_record.
pub(super) async fn task(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let wanted = id.clone();
    match read(&state, move |store| store.task(&wanted)).await {
        Ok(Some(task)) => axum::Json(task).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no task '{id}'")),
        Err(response) => response,
    }
}

/// `GET /v1/status`: is costmeter working, what has the agent spent, where do budgets stand.
pub(super) async fn status(State(state): State<Arc<AppState>>) -> Response {
    let reads = state.reads.clone();
    let computed = reads
        .compute(move |_| serde_json::to_vec(&overview(&state).0))
        .await;
    match computed {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(problem)) => error(StatusCode::INTERNAL_SERVER_ERROR, problem.to_string()),
        Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
    }
}

/// The status, the budgets and the 24-hour and 7-day spend from the hourly rollup, which the
/// status and the page both show: no scan of raw events, however many.
fn overview(state: &AppState) -> (Status, Vec<BudgetStatus>, Report, Report) {
    let view = state.ledger.view();
    let budgets = view.budgets.clone();
    let now = now_ms();
    let day = crate::spend::report(&state.spend, now - DAY_MS, now, budgets.clone());
    let week = crate::spend::report(&state.spend, now - 7 * DAY_MS, now, budgets.clone());
    let checks = state.health.checks();
    let usd_budgets = budgets.iter().any(|b| b.resource == Resource::Usd);
    let mut hints = Vec::new();
    if week.total_tokens == 0 && week.spend.is_empty() {
        hints.push("no LLM usage reported in the last 7 days: POST llm_usage events to /v1/events, or point the agent's OpenTelemetry exporter at this daemon (OTEL_EXPORTER_OTLP_ENDPOINT=http://<listen>/v1/otlp; README, \"Reporting usage\" and \"OpenTelemetry (OTLP)\")".to_string());
    }
    if budgets.is_empty() {
        hints.push("no budgets configured: add [budgets] or [[budget]] to the config to warn and stop at a limit".to_string());
    }
    let mut attention = state.metrics.attention(&state.targets);
    attention.unpriced_models = view
        .pricing
        .unknown_models
        .iter()
        .map(|u| crate::wire::Tally {
            name: u.model.clone(),
            count: u.events,
        })
        .collect();
    let status = Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        now: crate::report::iso(now),
        started: jiff::Timestamp::try_from(state.started)
            .map(|t| t.to_string())
            .unwrap_or_default(),
        uptime_seconds: state.started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
        ready: checks.iter().all(|c| c.ok),
        checks,
        problems: state.health.problems(now, usd_budgets),
        spend: SpendWindows {
            last_24h: Spend {
                usd: day.total_usd,
                tokens: day.total_tokens,
            },
            last_7d: Spend {
                usd: week.total_usd,
                tokens: week.total_tokens,
            },
        },
        budgets: budgets.iter().map(BudgetBrief::from).collect(),
        proxy: state
            .proxy
            .as_ref()
            .map(|p| p.upstream_names())
            .unwrap_or_default(),
        targets: state.targets.clone(),
        report: state.health.report(),
        attention,
        hints,
    };
    (status, budgets, day, week)
}

/// `GET /`: the status page.
pub(super) async fn page(State(state): State<Arc<AppState>>) -> Response {
    let filter = RunFilter {
        limit: 10,
        ..RunFilter::default()
    };
    let reads = state.reads.clone();
    let rendered = reads
        .run(move |store| {
            let runs = store.runs(&filter)?;
            let now = now_ms();
            let samples = store.resource_points(now - HOUR_MS, PAGE_SAMPLES)?;
            let (status, budgets, day, week) = overview(&state);
            let targets = state.metrics.target_figures(&state.targets);
            // A copy, so the ledger's next batch never waits for the page to be drawn.
            let spend = state
                .spend
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            Ok(crate::page::render(&crate::page::Sections {
                status: &status,
                budgets: &budgets,
                week: &week,
                day: &day,
                runs: &runs,
                targets: &targets,
                spend: &spend,
                samples: &samples,
                now_ms: now,
            }))
        })
        .await;
    match rendered {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(problem) => error(StatusCode::SERVICE_UNAVAILABLE, problem.to_string()),
    }
}

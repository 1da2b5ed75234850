//! The two writes that are orders, not data: `POST /v1/alerts` (Alertmanager asks a target to
//! be stopped) and `POST /v1/reload` (re-read the config file). Both need the bearer token
//! when one is configured, a JSON content type, and pass the guard: no web page reaches them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::{AppState, JSON, LedgerInput, Route, error, unavailable, write_body};
use crate::wire::{AlertAction, AlertIgnored, AlertsAnswer, Reloaded};

/// `POST /v1/alerts`: a firing alert labelled `costmeter_action="soft_kill"` and
/// `target="…"` stops that target if it is one of this sidecar's. This is how fleet-wide
/// budgets work: Prometheus sums every sidecar, the rule fires, Alertmanager tells each one.
pub(super) async fn alerts(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match write_body(&state, &headers, body, Route::alerts, JSON).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let sidecar = crate::alerts::Sidecar {
        targets: &state.targets,
        instances: &state.instances,
    };
    let decisions = match crate::alerts::decide(&body, &sidecar) {
        Ok(decisions) => decisions,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    let mut answer = AlertsAnswer {
        actions: Vec::new(),
        ignored: Vec::new(),
    };
    for decision in decisions {
        match decision.action {
            Ok(action) => {
                let (name, order) = match action {
                    crate::alerts::Action::Hold(order) => ("soft_kill", Some(order)),
                    crate::alerts::Action::Release => ("release", None),
                };
                let input = LedgerInput::AlertHold {
                    key: decision.key,
                    order,
                };
                if let Err(problem) = state.ledger.tell(input).await {
                    return unavailable(&problem);
                }
                answer.actions.push(AlertAction {
                    alert: decision.alert,
                    target: decision.target.unwrap_or_default(),
                    action: name.into(),
                    fingerprint: decision.fingerprint,
                });
            }
            Err(reason) => answer.ignored.push(AlertIgnored {
                alert: decision.alert,
                target: decision.target,
                reason,
            }),
        }
    }
    axum::Json(answer).into_response()
}

/// `POST /v1/reload`: re-reads the config file, as SIGHUP does (in `exec` mode SIGHUP goes to
/// the command, so this is the way there). A bad file keeps the running config: 400 says why.
pub(super) async fn reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(refusal) = write_body(&state, &headers, body, Route::reload, JSON).await {
        return refusal;
    }
    let (reply, answer) = oneshot::channel();
    if state.reload.send(reply).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "costmeter is shutting down",
        );
    }
    match answer.await {
        Ok(Ok(detail)) => axum::Json(Reloaded {
            reloaded: true,
            detail,
        })
        .into_response(),
        Ok(Err(problem)) => error(StatusCode::BAD_REQUEST, problem),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "costmeter is shutting down",
        ),
    }
}

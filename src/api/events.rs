//! `POST /v1/events`: one object, an array, or NDJSON. 202 when at least one event was stored
//! or already known; 400 when none was acceptable; 503 when the store failed (then nothing
//! was recorded and the whole request may be retried).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, EVENT_TYPES, Route, count_rejected, error, unavailable, write_body};
use crate::ingest::{self, BodyError, event};
use crate::wire::{EventsAnswer, Rejected};

pub(super) async fn post_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match write_body(&state, &headers, body, Route::events, EVENT_TYPES).await {
        Ok(bytes) => bytes,
        Err(refusal) => {
            count_rejected(&state, "http", &["unknown"]);
            return refusal;
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let items = match ingest::split_body(&bytes, content_type) {
        Ok(items) => items,
        Err(problem) => {
            count_rejected(&state, "http", &["unknown"]);
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
                rejected.push(Rejected {
                    index,
                    error: problem,
                });
            }
        }
    }
    count_rejected(&state, "http", &rejected_types);
    if events.is_empty() {
        let answer = EventsAnswer {
            accepted: 0,
            duplicates: 0,
            rejected,
        };
        return (StatusCode::BAD_REQUEST, axum::Json(answer)).into_response();
    }
    match state.ledger.events("http", events).await {
        Ok(answer) => {
            let accepted = answer.fresh.iter().filter(|new| **new).count();
            for (sent, problem) in answer.refused {
                rejected.push(Rejected {
                    index: indices.get(sent).copied().unwrap_or(sent),
                    error: problem,
                });
            }
            rejected.sort_by_key(|r| r.index);
            let status = if answer.fresh.is_empty() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::ACCEPTED
            };
            let answer = EventsAnswer {
                accepted,
                duplicates: answer.fresh.len() - accepted,
                rejected,
            };
            (status, axum::Json(answer)).into_response()
        }
        Err(problem) => unavailable(&problem),
    }
}

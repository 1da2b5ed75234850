//! Errors the proxy answers itself (an unreachable upstream, a body over the cap), in the JSON
//! shape of the provider the caller speaks to, so its SDK shows the message instead of a
//! parse error.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Provider;

/// Anthropic: `{"type": "error", "error": {"type", "message"}}`.
#[derive(Debug, Serialize)]
pub struct AnthropicError<'a> {
    pub r#type: &'static str,
    pub error: AnthropicDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct AnthropicDetail<'a> {
    pub r#type: &'a str,
    pub message: &'a str,
}

/// OpenAI: `{"error": {"message", "type", "code"}}`.
#[derive(Debug, Serialize)]
pub struct OpenAiError<'a> {
    pub error: OpenAiDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct OpenAiDetail<'a> {
    pub message: &'a str,
    pub r#type: &'a str,
    pub code: Option<&'a str>,
}

/// Gemini (Google APIs): `{"error": {"code", "message", "status"}}`.
#[derive(Debug, Serialize)]
pub struct GeminiError<'a> {
    pub error: GeminiDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct GeminiDetail<'a> {
    pub code: u16,
    pub message: &'a str,
    pub status: &'a str,
}

/// The provider's own names for an HTTP status.
fn kinds(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => ("invalid_request_error", "INVALID_ARGUMENT"),
        StatusCode::PAYLOAD_TOO_LARGE => ("request_too_large", "INVALID_ARGUMENT"),
        StatusCode::GATEWAY_TIMEOUT => ("timeout_error", "DEADLINE_EXCEEDED"),
        // Anthropic's own name for 402; OpenAI's `type` for spending limits. Gemini's status
        // stays clear of RESOURCE_EXHAUSTED, which clients treat as a quota to wait out.
        StatusCode::PAYMENT_REQUIRED => ("billing_error", "FAILED_PRECONDITION"),
        _ => ("api_error", "UNAVAILABLE"),
    }
}

/// The status of a refusal: 402, which none of the official SDKs retries (they retry 408,
/// 409, 429 and 5xx), and which Anthropic's API itself uses for billing errors. A 429 would
/// read as "try again shortly", and agents loop on it.
pub const REFUSAL: StatusCode = StatusCode::PAYMENT_REQUIRED;

/// The header naming the budget that refused a call.
pub const BUDGET_HEADER: &str = "x-costmeter-budget";

/// A call refused by a budget, in the provider's shape, naming the budget, what is used and
/// held of what, and when it frees up.
pub fn refuse(provider: Provider, refusal: &crate::ledger::BudgetRefusal) -> Response {
    use crate::config::OnFleetUnavailable;
    let b = &refusal.budget;
    match refusal.fleet_down {
        Some(OnFleetUnavailable::Refuse) => {
            return refuse_fleet_down(provider, &b.name, "its Redis does not answer");
        }
        Some(OnFleetUnavailable::Local) => {
            let message = format!(
                "costmeter: fleet budget '{}' has no room for this call in this sidecar's share: the fleet's Redis does not answer, so this sidecar admits only within its share of what the fleet had left (on_fleet_unavailable = \"local\"); the call may cost up to {} and {} of the share is free. Not retryable until Redis answers or the budget resets.",
                b.name,
                b.amount(refusal.needed),
                b.amount(refusal.free.max(0.0)),
            );
            return named(answer(provider, REFUSAL, &message), &b.name);
        }
        None => {}
    }
    let message = format!(
        "costmeter: budget '{}' has no room for this call: it may cost up to {}, and {} is free ({} used and {} held by calls in flight, of {}); {}. Not retryable until then.",
        b.name,
        b.amount(refusal.needed),
        b.amount(refusal.free),
        b.amount(b.used),
        b.amount(b.reserved),
        b.amount(b.limit),
        b.resets()
    );
    named(answer(provider, REFUSAL, &message), &b.name)
}

/// A call a fleet budget covers, refused because the fleet's Redis does not answer and
/// `[fleet] on_fleet_unavailable = "refuse"`.
pub fn refuse_fleet_down(provider: Provider, budget: &str, why: &str) -> Response {
    let message = format!(
        "costmeter: fleet budget '{budget}' cannot be checked ({why}) and on_fleet_unavailable = \"refuse\": calls it covers are refused until the fleet's Redis answers."
    );
    named(answer(provider, REFUSAL, &message), budget)
}

/// A refusal names its budget in a header, for clients that do not read the message.
fn named(mut response: Response, budget: &str) -> Response {
    if let Ok(value) = axum::http::HeaderValue::from_str(budget) {
        response.headers_mut().insert(BUDGET_HEADER, value);
    }
    response
}

/// An error answer in `provider`'s shape.
pub fn answer(provider: Provider, status: StatusCode, message: &str) -> Response {
    let (kind, google_status) = kinds(status);
    let body = match provider {
        Provider::Anthropic => serde_json::to_vec(&AnthropicError {
            r#type: "error",
            error: AnthropicDetail {
                r#type: kind,
                message,
            },
        }),
        Provider::OpenAi => serde_json::to_vec(&OpenAiError {
            error: OpenAiDetail {
                message,
                r#type: kind,
                code: None,
            },
        }),
        Provider::Gemini => serde_json::to_vec(&GeminiError {
            error: GeminiDetail {
                code: status.as_u16(),
                message,
                status: google_status,
            },
        }),
    }
    .unwrap_or_default();
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

//! Cross-site and DNS-rebinding defence, in front of every route but the probes.
//!
//! A web page the operator visits can make the browser send requests to loopback: "simple"
//! requests (form posts, `fetch` with `no-cors`) need no preflight, and a DNS-rebinding page
//! talks to costmeter under its own name. Two rules stop both, before any handler runs:
//! - `Host` must be an IP literal, `localhost`, or a name in `[server] allowed_hosts`: a
//!   rebinding page's requests carry its own domain.
//! - `Origin`, when present, must be the same origin as `Host`: browsers send it on every
//!   cross-origin request and every POST; command-line clients, exporters and Alertmanager do
//!   not send it.
//!
//! The write routes further take only JSON, NDJSON or protobuf bodies (checked by their
//! handlers after the token), which no simple cross-site request can send. `/metrics`,
//! `/healthz` and `/readyz` stay open to any `Host`, so scrapers reach them under any name.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{AppState, error};
use crate::health::{RefusalReason, Route};

/// Why a request was refused before its handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    ForeignHost(String),
    ForeignOrigin(String),
}

/// The host part of an authority (`name:port`, `[v6]:port`, `name`), lower case.
fn host_of(authority: &str) -> String {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    host
                } else {
                    authority
                }
            })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Decides on a request's `Host` and `Origin` headers. Pure.
pub fn judge(host: Option<&str>, origin: Option<&str>, allowed_hosts: &[String]) -> Verdict {
    if let Some(host) = host {
        let name = host_of(host);
        let known =
            name.parse::<IpAddr>().is_ok() || name == "localhost" || allowed_hosts.contains(&name);
        if !known {
            return Verdict::ForeignHost(name.chars().take(100).collect());
        }
    }
    if let Some(origin) = origin {
        // Same origin: the Origin's authority is the Host the request was sent to.
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        let same =
            matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.trim()));
        if !same {
            return Verdict::ForeignOrigin(origin.chars().take(100).collect());
        }
    }
    Verdict::Pass
}

/// The route label of a path, for counting refusals.
pub fn route_of(method: &axum::http::Method, path: &str) -> Route {
    match path {
        "/v1/events" => Route::events,
        "/v1/alerts" => Route::alerts,
        "/v1/reload" => Route::reload,
        "/v1/traces" | "/v1/otlp/v1/traces" => Route::otlp_traces,
        "/v1/metrics" | "/v1/otlp/v1/metrics" => Route::otlp_metrics,
        "/v1/logs" | "/v1/otlp/v1/logs" => Route::otlp_logs,
        _ if method == axum::http::Method::GET => Route::read,
        _ => Route::other,
    }
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware: refuses a foreign `Host` or `Origin` with 403 and counts it.
pub async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if matches!(path, "/metrics" | "/healthz" | "/readyz") {
        return next.run(request).await;
    }
    let headers = request.headers();
    let verdict = judge(
        header(headers, header::HOST),
        header(headers, header::ORIGIN),
        &state.allowed_hosts,
    );
    let (reason, message) = match verdict {
        Verdict::Pass => return next.run(request).await,
        Verdict::ForeignHost(host) => (
            RefusalReason::foreign_host,
            format!(
                "Host '{host}' is not this daemon's: use an IP address or localhost, or add the name to [server] allowed_hosts"
            ),
        ),
        Verdict::ForeignOrigin(origin) => (
            RefusalReason::foreign_origin,
            format!(
                "requests from web pages (Origin '{origin}') are refused: costmeter's API is for local clients, not browsers"
            ),
        ),
    };
    let route = route_of(request.method(), path);
    super::blocked(&state, route, reason).await;
    error(StatusCode::FORBIDDEN, message)
}

/// Whether a write's content type is one of `accepted` essences (parameters ignored).
pub fn content_type_is(headers: &HeaderMap, accepted: &[&str]) -> bool {
    header(headers, header::CONTENT_TYPE).is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        accepted.iter().any(|a| essence.eq_ignore_ascii_case(a))
    })
}

/// The 415 a write with another content type gets.
pub fn wrong_content_type(headers: &HeaderMap, accepted: &[&str]) -> Response {
    let given = header(headers, header::CONTENT_TYPE).unwrap_or("none");
    error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "content type '{}' is not accepted here; send {} (for curl: -H 'Content-Type: application/json')",
            given.chars().take(80).collect::<String>(),
            accepted.join(" or ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["costmeter".to_string()]
    }

    #[test]
    fn ip_literals_localhost_and_configured_names_pass() {
        for host in [
            "127.0.0.1:8000",
            "[::1]:8000",
            "localhost:8000",
            "LOCALHOST",
            "costmeter:8000",
            "10.1.2.3",
        ] {
            assert_eq!(judge(Some(host), None, &allowed()), Verdict::Pass, "{host}");
        }
        assert_eq!(judge(None, None, &allowed()), Verdict::Pass, "HTTP/1.0");
    }

    #[test]
    fn a_rebinding_name_is_refused() {
        assert_eq!(
            judge(Some("attacker.example:8000"), None, &allowed()),
            Verdict::ForeignHost("attacker.example".into())
        );
        assert!(matches!(
            judge(Some("costmeter.attacker.example"), None, &allowed()),
            Verdict::ForeignHost(_)
        ));
    }

    #[test]
    fn a_foreign_or_null_origin_is_refused_and_the_same_origin_passes() {
        let host = Some("127.0.0.1:8000");
        assert_eq!(
            judge(host, Some("http://127.0.0.1:8000"), &allowed()),
            Verdict::Pass
        );
        for origin in ["https://evil.example", "null", "http://127.0.0.1:9000"] {
            assert!(
                matches!(
                    judge(host, Some(origin), &allowed()),
                    Verdict::ForeignOrigin(_)
                ),
                "{origin}"
            );
        }
    }
}

//! The LLM API proxy: `/proxy/<name>/REST` forwarded to the upstream `<name>`'s base URL +
//! `/REST`, both ways unchanged, streams event by event; the provider's own usage read from
//! the answer and recorded as one `llm_usage` event per call (source `proxy`).
//!
//! A source, like the OTLP receivers: it hands events to the ledger and never touches totals.
//! - [`meter`]: the providers' usage shapes (pure).
//! - [`sse`]: server-sent events cut at their boundaries (pure).
//! - [`body`]: the answer's body, forwarded as it arrives and read on the way.
//! - [`errors`]: errors the proxy itself answers, in each provider's own JSON shape.
//!
//! What is changed on the way, and why (README, "The proxy"): hop-by-hop headers and `Host`
//! (HTTP's rules for proxies), `x-costmeter-agent` (ours), `Accept-Encoding` narrowed to
//! gzip/deflate/identity (what the proxy can read), and an OpenAI Chat Completions stream that
//! did not ask for usage gets `stream_options.include_usage` (its usage chunk is then not passed
//! on).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::{debug, warn};

use crate::config::{ProxyConfig, Upstream};
use crate::ledger::LedgerHandle;
use crate::metrics::{CallOutcome, Metrics, ProxyLabels};

mod body;
pub mod errors;
pub mod estimate;
pub mod meter;
pub mod sse;

pub use crate::config::Provider;

/// The header a caller names its agent with; not forwarded.
pub const AGENT_HEADER: &str = "x-costmeter-agent";

type Upstreams = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What the answers' bodies need when their call ends.
pub(crate) struct Shared {
    pub ledger: LedgerHandle,
    pub metrics: Arc<Metrics>,
    /// Fleet budgets' reservations in Redis, and what to do when it does not answer.
    pub fleet: Option<(
        crate::fleet::admit::Admitter,
        crate::config::OnFleetUnavailable,
    )>,
}

pub struct Proxy {
    config: ProxyConfig,
    client: Upstreams,
    shared: Arc<Shared>,
    /// `costmeter exec`'s target: the agent of calls that name none.
    exec_agent: Option<String>,
}

/// What the request says about the call, read before forwarding.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CallRequest {
    pub model: Option<String>,
    pub stream: bool,
}

/// Headers a proxy must not forward (RFC 9110 §7.6.1), and ours.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// `Accept-Encoding` narrowed to what the proxy can read on the way: gzip, deflate, identity.
fn narrow_accept_encoding(headers: &mut HeaderMap) {
    let Some(value) = headers.get(header::ACCEPT_ENCODING) else {
        return;
    };
    let kept: Vec<&str> = value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|coding| {
            let name = coding.split(';').next().unwrap_or("").trim();
            matches!(
                name.to_ascii_lowercase().as_str(),
                "gzip" | "x-gzip" | "deflate" | "identity"
            )
        })
        .collect();
    let narrowed = if kept.is_empty() {
        "identity".to_string()
    } else {
        kept.join(", ")
    };
    if let Ok(value) = HeaderValue::from_str(&narrowed) {
        headers.insert(header::ACCEPT_ENCODING, value);
    }
}

/// The model and stream flag of a request, from its JSON body (`Null` when it is not JSON)
/// and (Gemini) its path. Pure.
pub fn read_request(provider: Provider, path: &str, json: &serde_json::Value) -> CallRequest {
    let field = |key: &str| json.get(key);
    match provider {
        Provider::Gemini => {
            // /v1beta/models/gemini-3.1-pro:streamGenerateContent
            let model = path
                .split('/')
                .find_map(|segment| segment.split_once(':').map(|(m, _)| m.to_string()))
                .filter(|m| !m.is_empty());
            CallRequest {
                model,
                stream: path.contains(":streamGenerateContent"),
            }
        }
        _ => CallRequest {
            model: field("model").and_then(|m| m.as_str()).map(str::to_string),
            stream: field("stream").and_then(|s| s.as_bool()).unwrap_or(false),
        },
    }
}

/// For an OpenAI Chat Completions stream that did not ask for usage, the body asking for it
/// (`stream_options.include_usage`); `None` when nothing needs to change. Pure.
pub fn ask_for_usage(path: &str, json: &serde_json::Value) -> Option<Vec<u8>> {
    if !path.ends_with("/chat/completions") {
        return None;
    }
    let mut json = json.clone();
    let object = json.as_object_mut()?;
    if object.get("stream").and_then(|s| s.as_bool()) != Some(true) {
        return None;
    }
    match object.get_mut("stream_options") {
        Some(serde_json::Value::Object(options)) => {
            if options.get("include_usage").and_then(|v| v.as_bool()) == Some(true) {
                return None;
            }
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
        _ => {
            object.insert(
                "stream_options".into(),
                serde_json::json!({"include_usage": true}),
            );
        }
    }
    serde_json::to_vec(&json).ok()
}

/// The environment `costmeter exec` gives its command with the proxy on: each agent's and
/// SDK's base-URL variable pointing at the built-in upstream of its provider on this daemon.
pub fn agent_env(listen: std::net::SocketAddr, tls: bool) -> Vec<(&'static str, String)> {
    let host = match listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    let scheme = if tls { "https" } else { "http" };
    let base = format!("{scheme}://{host}:{}/proxy", listen.port());
    vec![
        // Claude Code and the Anthropic SDKs.
        ("ANTHROPIC_BASE_URL", format!("{base}/anthropic")),
        // Codex and the OpenAI SDKs; opencode and aider read it too.
        ("OPENAI_BASE_URL", format!("{base}/openai/v1")),
        // Gemini CLI and the Google Gen AI SDK.
        ("GOOGLE_GEMINI_BASE_URL", format!("{base}/gemini")),
    ]
}

/// A valid agent name from the caller's header.
fn agent_header(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AGENT_HEADER)?.to_str().ok()?.trim();
    let ok = !value.is_empty()
        && value.chars().count() <= crate::ingest::event::MAX_LABEL_CHARS
        && !value.chars().any(char::is_control);
    ok.then(|| value.to_string())
}

impl Proxy {
    pub fn new(
        config: &ProxyConfig,
        tls: &crate::tls::ClientTls,
        ledger: LedgerHandle,
        metrics: Arc<Metrics>,
        exec_agent: Option<String>,
        fleet: Option<(
            crate::fleet::admit::Admitter,
            crate::config::OnFleetUnavailable,
        )>,
    ) -> Result<Proxy, crate::tls::TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.rustls_config(&[])?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(Proxy {
            config: config.clone(),
            client,
            shared: Arc::new(Shared {
                ledger,
                metrics,
                fleet,
            }),
            exec_agent,
        })
    }

    /// The upstreams' names, for `/v1/status`.
    pub fn upstream_names(&self) -> Vec<String> {
        self.config
            .upstreams
            .iter()
            .map(|u| u.name.clone())
            .collect()
    }

    fn count(&self, upstream: &str, outcome: CallOutcome) {
        self.shared
            .metrics
            .proxy_calls_total
            .get_or_create(&ProxyLabels {
                upstream: upstream.to_string(),
                outcome,
            })
            .inc();
    }

    /// Holds the call's worst case against the hard budgets covering `agent`, or answers the
    /// refusal. No round trip to the ledger when no hard usage budget covers the agent (`held`).
    async fn admit(
        &self,
        upstream: &Upstream,
        agent: &str,
        call: &CallRequest,
        worst: &estimate::Worst,
        stream: bool,
        held: bool,
    ) -> Result<Option<crate::ledger::Admission>, Response> {
        if !held {
            return Ok(None);
        }
        let ask = crate::ledger::CallAsk {
            agent: agent.to_string(),
            model: call.model.clone(),
            input_tokens: worst.input_tokens,
            output_tokens: worst.output_tokens,
            stream,
        };
        match self.shared.ledger.reserve(ask).await {
            Ok(Ok(admission)) => self.admit_fleet(upstream, agent, admission).await.map(Some),
            Ok(Err(refusal)) => {
                self.count(&upstream.name, CallOutcome::refused);
                warn!(upstream = %upstream.name, agent, budget = %refusal.budget.name, needed = refusal.needed, free = refusal.free, "proxy: call refused, a hard budget has no room for it");
                Err(errors::refuse(upstream.provider, &refusal))
            }
            Err(unavailable) => Err(errors::answer(
                upstream.provider,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("costmeter proxy: the call could not be admitted: {unavailable}"),
            )),
        }
    }

    /// Reserves the fleet budgets covering an admitted call in Redis; refused there, the local
    /// reservation is released and the call refused. With Redis unreachable the outage policy
    /// decides: `local` keeps the call (the ledger held it against this sidecar's view),
    /// `refuse` refuses it.
    async fn admit_fleet(
        &self,
        upstream: &Upstream,
        agent: &str,
        admission: crate::ledger::Admission,
    ) -> Result<crate::ledger::Admission, Response> {
        use crate::fleet::admit::FleetRefusal;
        let Some((fleet, policy)) = &self.shared.fleet else {
            return Ok(admission);
        };
        if admission.fleet.is_empty() {
            return Ok(admission);
        }
        let outcome = fleet.reserve(admission.reservation, &admission.fleet).await;
        let refusal = match outcome {
            Ok(()) => return Ok(admission),
            Err(FleetRefusal::Unreachable(why))
                if *policy == crate::config::OnFleetUnavailable::Local =>
            {
                warn!(upstream = %upstream.name, agent, %why, "proxy: fleet Redis unreachable; admitted on this sidecar's view (on_fleet_unavailable = \"local\")");
                return Ok(admission);
            }
            Err(FleetRefusal::Unreachable(why)) => {
                let budget = admission.fleet[0].0.clone();
                warn!(upstream = %upstream.name, agent, %why, budget, "proxy: call refused, the fleet's Redis does not answer (on_fleet_unavailable = \"refuse\")");
                errors::refuse_fleet_down(upstream.provider, &budget, &why)
            }
            Err(FleetRefusal::NoRoom {
                budget,
                used,
                reserved,
                limit,
                needed,
            }) => {
                warn!(upstream = %upstream.name, agent, %budget, used, reserved, limit, needed, "proxy: call refused, a fleet budget has no room for it");
                let view = self.shared.ledger.view();
                match view.budgets.iter().find(|b| b.name == budget) {
                    Some(status) => {
                        let mut status = status.clone();
                        status.used = used;
                        status.reserved = reserved;
                        errors::refuse(
                            upstream.provider,
                            &crate::ledger::BudgetRefusal {
                                budget: Box::new(status),
                                needed,
                                free: (limit - used - reserved).max(0.0),
                                fleet_down: None,
                            },
                        )
                    }
                    None => errors::refuse_fleet_down(upstream.provider, &budget, "no room"),
                }
            }
        };
        self.count(&upstream.name, CallOutcome::refused);
        settle(
            &self.shared,
            upstream.name.clone(),
            Some(admission.reservation),
            Vec::new(),
        );
        Err(refusal)
    }

    /// Serves one `/proxy/...` request.
    pub async fn handle(&self, request: Request) -> Response {
        let path = request.uri().path().to_string();
        let rest = path.strip_prefix("/proxy/").unwrap_or("");
        let (name, tail) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let Some(upstream) = self.config.upstream(name).cloned() else {
            let known: Vec<&str> = self
                .config
                .upstreams
                .iter()
                .map(|u| u.name.as_str())
                .collect();
            return not_found(format!(
                "no upstream named '{}': /proxy/NAME/… with NAME one of {} ([[proxy.upstream]] adds more)",
                name.chars().take(64).collect::<String>(),
                known.join(", ")
            ));
        };
        let agent = agent_header(request.headers())
            .or_else(|| upstream.agent.clone())
            .or_else(|| self.exec_agent.clone())
            .unwrap_or_else(|| self.config.default_agent.clone());
        let (parts, body) = request.into_parts();
        let limit = usize::try_from(self.config.max_request_bytes).unwrap_or(usize::MAX);
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                let too_large = error
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let (status, message) = if too_large {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "costmeter proxy: the request body is over [proxy] max_request_bytes ({limit} bytes)"
                        ),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("costmeter proxy: the request body could not be read: {error}"),
                    )
                };
                return errors::answer(upstream.provider, status, &message);
            }
        };
        // Parsed once: the model, stream flag, output limit and usage option all come from it.
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let call = read_request(upstream.provider, tail, &json);
        let asked_usage = match upstream.provider {
            Provider::OpenAi if call.stream => ask_for_usage(tail, &json),
            _ => None,
        };
        let strip_usage_chunk = asked_usage.is_some();
        let api = api_of(upstream.provider, tail);
        // Only server-sent events can be cut cleanly (Gemini without `alt=sse` streams a JSON
        // array).
        let cuttable = call.stream
            && api != body::Api::Other
            && (upstream.provider != Provider::Gemini
                || parts.uri.query().is_some_and(|q| q.contains("alt=sse")));
        let worst = estimate::worst_case(upstream.provider, body.len(), &json);
        drop(json);
        // One view for the call: what is left as it found it, before its own reservation.
        let view = self.shared.ledger.view();
        let budget_headers = budget_headers(&view, &agent);
        let held = view.budgets.iter().any(|b| b.holds_calls_of(&agent));
        drop(view);
        let admission = match self
            .admit(&upstream, &agent, &call, &worst, cuttable, held)
            .await
        {
            Ok(admission) => admission,
            Err(refusal) => return refusal,
        };
        // Released when this function returns without handing it to the body (an unreachable
        // upstream), or is dropped (the caller left before the headers).
        let mut pending = Pending {
            shared: &self.shared,
            upstream: upstream.name.clone(),
            reservation: admission.as_ref().map(|a| a.reservation),
        };
        let body = asked_usage.map(Bytes::from).unwrap_or(body);

        let target = match parts.uri.query() {
            Some(query) => format!("{}{tail}?{query}", upstream.base_url),
            None => format!("{}{tail}", upstream.base_url),
        };
        let uri: Uri = match target.parse() {
            Ok(uri) => uri,
            Err(error) => {
                return errors::answer(
                    upstream.provider,
                    StatusCode::BAD_REQUEST,
                    &format!("costmeter proxy: '{tail}' does not make a URL: {error}"),
                );
            }
        };
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(AGENT_HEADER);
        narrow_accept_encoding(&mut headers);
        if strip_usage_chunk {
            // The usage chunk is removed from the stream; that needs its bytes as sent.
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
        let mut outbound = hyper::Request::builder()
            .method(parts.method)
            .uri(uri)
            .body(Full::new(body))
            .expect("a request from parts that were valid");
        *outbound.headers_mut() = headers;

        let started = std::time::Instant::now();
        let answer =
            tokio::time::timeout(self.config.response_timeout, self.client.request(outbound)).await;
        let response = match answer {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                self.count(&upstream.name, CallOutcome::unreachable);
                let cause = error_chain(&error);
                warn!(upstream = %upstream.name, url = %upstream.base_url, error = %cause, "proxy: the upstream could not be reached");
                return errors::answer(
                    upstream.provider,
                    StatusCode::BAD_GATEWAY,
                    &format!(
                        "costmeter proxy: upstream '{}' ({}) could not be reached: {cause}",
                        upstream.name, upstream.base_url
                    ),
                );
            }
            Err(_) => {
                self.count(&upstream.name, CallOutcome::unreachable);
                warn!(upstream = %upstream.name, url = %upstream.base_url, timeout = ?self.config.response_timeout, "proxy: no answer from the upstream in time");
                return errors::answer(
                    upstream.provider,
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "costmeter proxy: upstream '{}' did not answer within [proxy] response_timeout ({})",
                        upstream.name,
                        humantime::format_duration(self.config.response_timeout)
                    ),
                );
            }
        };
        debug!(upstream = %upstream.name, status = %response.status(), ms = started.elapsed().as_millis() as u64, "proxy: answer headers");
        let (mut parts, incoming) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let request_id = upstream
            .provider
            .request_id_header()
            .and_then(|name| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 256)
            .map(str::to_string);
        let is_sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if is_sse {
            // Events are passed on whole, and one may be left out: the length is not known.
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let encoding = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        for (name, value) in budget_headers {
            parts.headers.insert(name, value);
        }
        // A stream is cut at its admitted output when a budget bounded it, or when it set no
        // limit of its own (the default stood in for the reservation).
        let cut = admission.as_ref().and_then(|a| {
            let bounded = a.limited_by.is_some() || !worst.output_limited_by_request;
            (cuttable && bounded).then(|| body::CutRule {
                output_tokens: a.output_tokens,
                why: match &a.limited_by {
                    Some(budget) => format!("budget '{budget}' has no room for more output"),
                    None => format!(
                        "the call set no output limit; {} tokens were reserved for it",
                        a.output_tokens
                    ),
                },
            })
        });
        let ending = body::Call {
            shared: self.shared.clone(),
            upstream: upstream_labels(&upstream),
            agent,
            request: call,
            request_id,
            status: parts.status,
            reservation: pending.take(),
            input_estimate: worst.input_tokens,
            cut,
            api,
        };
        let metered = body::Metered::new(
            incoming,
            upstream.provider,
            is_sse,
            strip_usage_chunk,
            encoding.as_deref(),
            ending,
        );
        Response::from_parts(parts, Body::new(metered)).into_response()
    }
}

/// A reservation not yet handed to the answer's body: released if the request is dropped
/// first (the caller went away before the provider's headers came).
struct Pending<'a> {
    shared: &'a Arc<Shared>,
    upstream: String,
    reservation: Option<u64>,
}

impl Pending<'_> {
    /// The reservation, now the body's (or settled by the caller) to end.
    fn take(&mut self) -> Option<u64> {
        self.reservation.take()
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            settle(
                self.shared,
                self.upstream.clone(),
                Some(reservation),
                Vec::new(),
            );
        }
    }
}

/// `x-costmeter-budget-remaining` (every usage budget that applies to `agent`) and
/// `x-costmeter-budget-warning` (those past their `warn_at`), from the published view.
fn budget_headers(view: &crate::ledger::View, agent: &str) -> Vec<(HeaderName, HeaderValue)> {
    let applying: Vec<&crate::budget::BudgetStatus> = view
        .budgets
        .iter()
        .filter(|b| {
            b.resource.is_usage() && b.target.is_none() && crate::admission::applies(b, Some(agent))
        })
        .collect();
    let mut headers = Vec::new();
    let remaining: Vec<String> = applying
        .iter()
        .map(|b| {
            let free = (b.remaining - b.reserved).max(0.0);
            format!("{}={} {}", b.name, plain_number(free), b.resource.label())
        })
        .collect();
    let warning: Vec<String> = applying
        .iter()
        .filter(|b| b.ratio >= b.warn_at)
        .map(|b| format!("{}:{:.0}%", b.name, b.ratio * 100.0))
        .collect();
    for (name, values) in [
        ("x-costmeter-budget-remaining", remaining),
        ("x-costmeter-budget-warning", warning),
    ] {
        if let (false, Ok(value)) = (values.is_empty(), HeaderValue::from_str(&values.join(", "))) {
            headers.push((HeaderName::from_static(name), value));
        }
    }
    headers
}

/// A number in a header: whole numbers bare, others to six places without trailing zeros.
fn plain_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{}", value as i64);
    }
    let text = format!("{value:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Which API a path is, for cutting streams in its own format.
fn api_of(provider: Provider, path: &str) -> body::Api {
    match provider {
        Provider::Anthropic if path.ends_with("/messages") => body::Api::AnthropicMessages,
        Provider::OpenAi if path.ends_with("/chat/completions") => body::Api::OpenAiChat,
        Provider::OpenAi if path.ends_with("/responses") => body::Api::OpenAiResponses,
        Provider::Gemini if path.contains(":streamGenerateContent") => body::Api::Gemini,
        _ => body::Api::Other,
    }
}

/// Hands a finished call to the ledger off the caller's path: its usage (if any) is stored
/// and charged, then its reservation released.
pub(crate) fn settle(
    shared: &Shared,
    upstream: String,
    reservation: Option<u64>,
    events: Vec<crate::ingest::Event>,
) {
    if reservation.is_none() && events.is_empty() {
        return;
    }
    let ledger = shared.ledger.clone();
    let fleet = shared.fleet.clone();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(error) = ledger.settle(reservation, events).await {
                warn!(%upstream, %error, "proxy: the call's usage could not be stored");
            }
            // Committed: the fleet reservation ends with the push that charges the usage.
            if let (Some((fleet, _)), Some(reservation)) = (&fleet, reservation) {
                fleet.release(reservation);
            }
        });
    }
}

/// `{"error": "..."}` for a name no upstream has: the caller named no provider yet.
fn not_found(message: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(crate::wire::ErrorBody { error: message }),
    )
        .into_response()
}

/// The upstream as the body's ending needs it.
fn upstream_labels(upstream: &Upstream) -> body::UpstreamRef {
    body::UpstreamRef {
        name: upstream.name.clone(),
        provider: upstream.provider,
    }
}

/// An error and its causes, on one line (hyper's own message is only "client error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &[u8]) -> serde_json::Value {
        serde_json::from_slice(body).unwrap_or_default()
    }

    fn read_request(provider: Provider, path: &str, body: &[u8]) -> CallRequest {
        super::read_request(provider, path, &parsed(body))
    }

    fn ask_for_usage(path: &str, body: &[u8]) -> Option<Vec<u8>> {
        super::ask_for_usage(path, &parsed(body))
    }

    #[test]
    fn the_request_says_model_and_stream() {
        assert_eq!(
            read_request(
                Provider::Anthropic,
                "/v1/messages",
                br#"{"model":"claude-opus-4-8","max_tokens":10,"stream":true}"#
            ),
            CallRequest {
                model: Some("claude-opus-4-8".into()),
                stream: true
            }
        );
        assert_eq!(
            read_request(
                Provider::Gemini,
                "/v1beta/models/gemini-3.8-flash:streamGenerateContent",
                b"{}"
            ),
            CallRequest {
                model: Some("gemini-3.8-flash".into()),
                stream: true
            }
        );
    }

    #[test]
    fn usage_is_asked_for_only_where_it_is_missing() {
        let asked = ask_for_usage(
            "/v1/chat/completions",
            br#"{"model":"gpt-5.2","stream":true,"messages":[]}"#,
        )
        .expect("asked");
        let json: serde_json::Value = serde_json::from_slice(&asked).expect("json");
        assert_eq!(json["stream_options"]["include_usage"], true);
        assert_eq!(json["model"], "gpt-5.2");
        assert!(
            ask_for_usage(
                "/v1/chat/completions",
                br#"{"stream":true,"stream_options":{"include_usage":true}}"#
            )
            .is_none()
        );
        assert!(ask_for_usage("/v1/chat/completions", br#"{"stream":false}"#).is_none());
        assert!(ask_for_usage("/v1/responses", br#"{"stream":true}"#).is_none());
    }

    #[test]
    fn hop_by_hop_headers_and_unreadable_encodings_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-trace"),
        );
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert("x-api-key", HeaderValue::from_static("sk-test"));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip, deflate, br, zstd"),
        );
        strip_hop_by_hop(&mut headers);
        narrow_accept_encoding(&mut headers);
        assert!(headers.get("x-trace").is_none() && headers.get(header::CONNECTION).is_none());
        assert_eq!(headers["x-api-key"], "sk-test");
        assert_eq!(headers[header::ACCEPT_ENCODING], "gzip, deflate");
    }
}

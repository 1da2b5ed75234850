//! `[proxy]` and `[[proxy.upstream]]`: the LLM API proxy on the main port.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Locator;
use crate::ingest::event::MAX_LABEL_CHARS;

/// The wire protocol an upstream speaks. A closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Anthropic,
    OpenAi,
    Gemini,
}

impl Provider {
    pub fn label(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::OpenAi => "openai",
            Provider::Gemini => "gemini",
        }
    }

    pub fn from_label(label: &str) -> Option<Provider> {
        match label {
            "anthropic" => Some(Provider::Anthropic),
            "openai" => Some(Provider::OpenAi),
            "gemini" => Some(Provider::Gemini),
            _ => None,
        }
    }

    /// The response header carrying the provider's request id, when it sends one.
    pub fn request_id_header(self) -> Option<&'static str> {
        match self {
            Provider::Anthropic => Some("request-id"),
            Provider::OpenAi => Some("x-request-id"),
            Provider::Gemini => None,
        }
    }
}

/// `[proxy]`, validated, with the built-in upstreams merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub enabled: bool,
    /// The agent of calls that name none (no `x-costmeter-agent`, no upstream `agent`, no
    /// exec target).
    pub default_agent: String,
    /// By name; a configured table with a built-in name replaced it.
    pub upstreams: Vec<Upstream>,
    /// Time to connect to an upstream (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time from the request sent to the response's headers. Streams, once they started, are
    /// not timed: a long generation is not an error.
    pub response_timeout: Duration,
    /// Largest request body forwarded, in bytes (the body is read whole before forwarding:
    /// its model and limits are needed first).
    pub max_request_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub provider: Provider,
    /// Scheme and authority, and a path prefix without a trailing `/`.
    pub base_url: String,
    pub agent: Option<String>,
}

pub const DEFAULT_PROXY_AGENT: &str = "proxy";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 32 * 1024 * 1024;

/// The providers' public endpoints, under their own names.
pub fn builtin_upstreams() -> Vec<Upstream> {
    [
        (
            "anthropic",
            Provider::Anthropic,
            "https://api.anthropic.com",
        ),
        ("openai", Provider::OpenAi, "https://api.openai.com"),
        (
            "gemini",
            Provider::Gemini,
            "https://generativelanguage.googleapis.com",
        ),
    ]
    .into_iter()
    .map(|(name, provider, url)| Upstream {
        name: name.to_string(),
        provider,
        base_url: url.to_string(),
        agent: None,
    })
    .collect()
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            enabled: false,
            default_agent: DEFAULT_PROXY_AGENT.to_string(),
            upstreams: builtin_upstreams(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

impl ProxyConfig {
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    enabled: Option<bool>,
    default_agent: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    response_timeout: Option<Spanned<String>>,
    max_request_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    upstream: Vec<Spanned<RawUpstream>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: Spanned<String>,
    provider: Spanned<String>,
    base_url: Spanned<String>,
    agent: Option<Spanned<String>>,
}

fn label(locator: &mut Locator<'_>, raw: &Spanned<String>, field: &str) -> Option<String> {
    let value = raw.get_ref();
    let chars = value.chars().count();
    if chars == 0 || chars > MAX_LABEL_CHARS || value.chars().any(char::is_control) {
        locator.report(
            raw.span(),
            format!(
                "{field}: must be 1 to {MAX_LABEL_CHARS} characters without control characters"
            ),
        );
        return None;
    }
    Some(value.clone())
}

/// An upstream's base URL: http or https, a host, an optional path prefix; no query, no
/// fragment, no user info. A trailing `/` is dropped.
pub fn base_url(text: &str) -> Result<String, String> {
    let uri: axum::http::Uri = text
        .parse()
        .map_err(|e| format!("'{text}' is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("'{text}' must start with http:// or https://")),
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("'{text}' names no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "'{text}' must not carry user info: the caller's own credentials pass through"
        ));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("'{text}' must not have a query or a fragment"));
    }
    Ok(text.trim_end_matches('/').to_string())
}

pub(super) fn validate_proxy(locator: &mut Locator<'_>, raw: &RawProxy) -> ProxyConfig {
    let defaults = ProxyConfig::default();
    let default_agent = raw
        .default_agent
        .as_ref()
        .and_then(|a| label(locator, a, "proxy.default_agent"))
        .unwrap_or(defaults.default_agent);
    let mut upstreams = defaults.upstreams;
    let mut configured: Vec<String> = Vec::new();
    for table in &raw.upstream {
        let table = table.get_ref();
        let name = table.name.get_ref();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            locator.report(
                table.name.span(),
                format!(
                    "proxy.upstream.name: '{}' must be 1 to 64 letters, digits, '-', '_' or '.' (it is a path segment: /proxy/NAME/…)",
                    name.chars().take(80).collect::<String>()
                ),
            );
        } else if configured.contains(name) {
            locator.report(
                table.name.span(),
                format!("proxy.upstream.name: '{name}' is configured twice"),
            );
        }
        let provider = match Provider::from_label(table.provider.get_ref()) {
            Some(p) => Some(p),
            None => {
                locator.report(
                    table.provider.span(),
                    format!(
                        "proxy.upstream.provider: must be one of anthropic, openai, gemini, got '{}'",
                        table.provider.get_ref().chars().take(40).collect::<String>()
                    ),
                );
                None
            }
        };
        let url = match base_url(table.base_url.get_ref()) {
            Ok(url) => Some(url),
            Err(problem) => {
                locator.report(
                    table.base_url.span(),
                    format!("proxy.upstream.base_url: {problem}"),
                );
                None
            }
        };
        let agent = table
            .agent
            .as_ref()
            .and_then(|a| label(locator, a, "proxy.upstream.agent"));
        if let (true, Some(provider), Some(base_url)) = (name_ok, provider, url) {
            configured.push(name.clone());
            upstreams.retain(|u| &u.name != name);
            upstreams.push(Upstream {
                name: name.clone(),
                provider,
                base_url,
                agent,
            });
        }
    }
    ProxyConfig {
        enabled: raw.enabled.unwrap_or(false),
        default_agent,
        upstreams,
        connect_timeout: locator.duration(
            raw.connect_timeout.as_ref(),
            "proxy.connect_timeout",
            Duration::from_millis(100),
            Duration::from_secs(300),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        response_timeout: locator.duration(
            raw.response_timeout.as_ref(),
            "proxy.response_timeout",
            Duration::from_secs(1),
            Duration::from_secs(3600),
            DEFAULT_RESPONSE_TIMEOUT,
        ),
        max_request_bytes: super::body_cap(
            locator,
            raw.max_request_bytes.as_ref(),
            "proxy.max_request_bytes",
            DEFAULT_MAX_REQUEST_BYTES,
        ),
    }
}

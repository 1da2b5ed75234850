//! `[fleet]`: how this sidecar is known among many, and where fleet budgets live. The name is
//! the one Alertmanager's alerts use for it (their `instance` label: Prometheus's scrape
//! address), so an alert about one sidecar never acts on another; `redis_url` is the Redis that
//! holds every `fleet = true` budget's totals and reservations.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::Locator;

/// What a sidecar does with a call a fleet budget covers while Redis cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFleetUnavailable {
    /// Admit within this sidecar's share of what the fleet had left when Redis was last seen:
    /// (limit − fleet used) ÷ the sidecars then alive, less what this sidecar spent since.
    #[default]
    Local,
    /// Refuse every call a fleet budget covers.
    Refuse,
}

impl OnFleetUnavailable {
    pub fn label(self) -> &'static str {
        match self {
            OnFleetUnavailable::Local => "local",
            OnFleetUnavailable::Refuse => "refuse",
        }
    }
}

/// Where fleet budgets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` (TLS, with `[tls] ca_file` as the trusted root when given).
    pub url: String,
    /// A password read from a file (its first line), instead of one in the URL.
    pub password_file: Option<PathBuf>,
}

/// `[fleet]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetConfig {
    /// `instance`: the name alerts carry for this sidecar; when absent, it answers to its
    /// hostname, `localhost` and the listen address, each with the listen port.
    pub instance: Option<String>,
    /// `redis_url` (and `password_file`): absent means no fleet budgets.
    pub redis: Option<RedisConfig>,
    /// `name`: the namespace of this fleet's keys in Redis, so fleets can share one server.
    pub name: String,
    pub on_fleet_unavailable: OnFleetUnavailable,
}

/// The namespace when `[fleet] name` is not given.
pub const DEFAULT_FLEET_NAME: &str = "costmeter";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    instance: Option<Spanned<String>>,
    redis_url: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    on_fleet_unavailable: Option<Spanned<String>>,
}

impl RawFleet {
    pub(super) fn has_redis(&self) -> bool {
        self.redis_url.is_some()
    }
}

/// A label-like name: 1 to 255 characters, none of them spaces or control characters.
fn plain_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 255
        && !text.chars().any(|c| c.is_control() || c.is_whitespace())
}

pub(super) fn validate_fleet(locator: &mut Locator<'_>, raw: &RawFleet) -> FleetConfig {
    let instance = raw.instance.as_ref().and_then(|value| {
        if plain_name(value.get_ref()) {
            Some(value.get_ref().clone())
        } else {
            locator.report(
                value.span(),
                "fleet.instance: must be 1 to 255 characters without spaces or control characters (Prometheus's instance label for this sidecar, e.g. \"host-a:8000\")".to_string(),
            );
            None
        }
    });
    let name = match &raw.name {
        None => DEFAULT_FLEET_NAME.to_string(),
        Some(value) if plain_name(value.get_ref()) && !value.get_ref().contains(':') => {
            value.get_ref().clone()
        }
        Some(value) => {
            locator.report(
                value.span(),
                "fleet.name: must be 1 to 255 characters without spaces, colons or control characters (the prefix of this fleet's keys in Redis)".to_string(),
            );
            DEFAULT_FLEET_NAME.to_string()
        }
    };
    let on_fleet_unavailable = match raw.on_fleet_unavailable.as_ref() {
        None => OnFleetUnavailable::default(),
        Some(value) => match value.get_ref().as_str() {
            "local" => OnFleetUnavailable::Local,
            "refuse" => OnFleetUnavailable::Refuse,
            other => {
                locator.report(
                    value.span(),
                    format!("fleet.on_fleet_unavailable: '{other}' is not local or refuse"),
                );
                OnFleetUnavailable::default()
            }
        },
    };
    let redis = raw.redis_url.as_ref().and_then(|url| {
        let text = url.get_ref();
        match redis_url_problem(text) {
            Some(problem) => {
                locator.report(url.span(), format!("fleet.redis_url: {problem}"));
                None
            }
            None => Some(RedisConfig {
                url: text.clone(),
                password_file: raw
                    .password_file
                    .as_ref()
                    .map(|p| PathBuf::from(p.get_ref())),
            }),
        }
    });
    if let (None, Some(file), None) = (&raw.redis_url, &raw.password_file, &redis) {
        locator.report(
            file.span(),
            "fleet.password_file: is for Redis; give fleet.redis_url too",
        );
    }
    FleetConfig {
        instance,
        redis,
        name,
        on_fleet_unavailable,
    }
}

/// Why `url` is not a Redis URL costmeter can use, if it is not.
fn redis_url_problem(url: &str) -> Option<String> {
    let scheme = url.split("://").next().unwrap_or_default();
    if !matches!(scheme, "redis" | "rediss") || !url.contains("://") {
        return Some(format!(
            "'{}' must start with redis:// or rediss:// (TLS), e.g. \"redis://127.0.0.1:6379/0\"",
            redact(url)
        ));
    }
    match redis::parse_redis_url(url) {
        Some(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => None,
        _ => Some(format!(
            "'{}' is not a URL of the form redis://[USER:PASSWORD@]HOST:PORT[/DB]",
            redact(url)
        )),
    }
}

/// A Redis URL without its password, for errors and logs.
pub fn redact(url: &str) -> String {
    match url.rfind('@') {
        Some(at) => {
            let scheme = url
                .find("://")
                .filter(|&s| s < at)
                .map_or("", |s| &url[..s + 3]);
            format!("{scheme}***@{}", &url[at + 1..])
        }
        None => url.to_string(),
    }
}

impl FleetConfig {
    /// The names this sidecar answers to in an alert's `instance` label.
    pub fn instance_names(&self, listen: std::net::SocketAddr) -> Vec<String> {
        if let Some(instance) = &self.instance {
            return vec![instance.clone()];
        }
        let port = listen.port();
        let mut names = vec![format!("localhost:{port}"), listen.to_string()];
        if let Ok(host) = rustix::system::uname().nodename().to_str() {
            names.insert(0, format!("{host}:{port}"));
        }
        names
    }

    /// The one name this sidecar goes by in the fleet's Redis and logs.
    pub fn instance_name(&self, listen: std::net::SocketAddr) -> String {
        self.instance_names(listen).swap_remove(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_are_checked_and_passwords_redacted() {
        assert_eq!(redis_url_problem("redis://127.0.0.1:6379/0"), None);
        assert_eq!(redis_url_problem("rediss://cache.internal:6380"), None);
        assert!(
            redis_url_problem("http://127.0.0.1:6379")
                .is_some_and(|p| p.contains("must start with redis://"))
        );
        let problem = redis_url_problem("redis:/:secret@").unwrap_or_default();
        assert!(
            !problem.is_empty() && !problem.contains("secret"),
            "{problem}"
        );
        assert_eq!(
            redact("redis://user:hunter2@host:6379/1"),
            "redis://***@host:6379/1"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}

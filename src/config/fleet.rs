//! `[fleet]`: how this sidecar is known among many. Today that is the name Alertmanager's
//! alerts use for it (their `instance` label: Prometheus's scrape address), so an alert about
//! one sidecar never acts on another.

use serde::Deserialize;
use toml::Spanned;

use super::Locator;

/// `[fleet]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetConfig {
    /// `instance`: the name alerts carry for this sidecar; when absent, it answers to its
    /// hostname, `localhost` and the listen address, each with the listen port.
    pub instance: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    instance: Option<Spanned<String>>,
}

pub(super) fn validate_fleet(locator: &mut Locator<'_>, raw: &RawFleet) -> FleetConfig {
    let instance = raw.instance.as_ref().and_then(|value| {
        let text = value.get_ref();
        let ok = !text.is_empty()
            && text.len() <= 255
            && !text.chars().any(|c| c.is_control() || c.is_whitespace());
        if ok {
            Some(text.clone())
        } else {
            locator.report(
                value.span(),
                "fleet.instance: must be 1 to 255 characters without spaces or control characters (Prometheus's instance label for this sidecar, e.g. \"host-a:8000\")".to_string(),
            );
            None
        }
    });
    FleetConfig { instance }
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
}

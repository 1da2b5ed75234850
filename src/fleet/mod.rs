//! Fleet budgets: one budget shared by many sidecars, its totals and reservations in Redis.
//!
//! Usage flows one way, from the store: the [`pusher`] thread reads what the ledger committed
//! (in store order, after the cursor Redis keeps for this store) and charges it with one
//! script, so an event is counted once however often a push is retried, and a backlog left by
//! an outage or a restart is pushed when Redis answers. Every change is published; each
//! sidecar's subscriber hands the fleet's totals to its ledger, which judges fleet budgets
//! like local ones (a crossing anywhere stops the targets here). The proxy's admissions
//! reserve in Redis through [`admit::Admitter`], in one check-and-reserve step.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::budget::{BudgetSpec, FleetTotal, Resource, Scope, Window};
use crate::config::{FleetConfig, RedisConfig};

pub mod admit;
pub mod pusher;
mod scripts;

/// Most usage events charged in one push.
pub const PUSH_BATCH: usize = 1000;
/// A store that has not pushed for this long no longer counts among the sidecars alive (the
/// outage share's divisor).
pub const ALIVE_MS: i64 = 30_000;
/// A Redis reservation nothing settled or released is dropped after this long (a sidecar that
/// died mid-call holds nothing forever).
pub const RESERVATION_TTL_MS: i64 = 600_000;
/// A calendar window's keys outlive the window by this long, then expire.
const WINDOW_KEEP_S: i64 = 7 * 86_400;
/// Connect and answer timeouts for every Redis call.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet Redis {url}: {source}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("fleet.password_file {path}: {source}")]
    Password {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fleet Redis answered what costmeter cannot read: {0}")]
    Answer(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A budget shared by the fleet, as this sidecar configured it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetBudget {
    pub name: String,
    pub resource: Resource,
    pub window: Window,
    /// Only this agent's usage counts, when set.
    pub agent: Option<String>,
    pub limit: f64,
}

impl FleetBudget {
    /// The fleet budgets among `specs`.
    pub fn of(specs: &[BudgetSpec]) -> Vec<FleetBudget> {
        specs
            .iter()
            .filter(|s| s.fleet)
            .map(|s| FleetBudget {
                name: s.name.clone(),
                resource: s.resource,
                window: s.window,
                agent: match &s.scope {
                    Scope::Agent(a) => Some(a.clone()),
                    _ => None,
                },
                limit: s.limit,
            })
            .collect()
    }

    /// The window holding `at_ms`: its start (0 for lifetime) and when its keys expire (unix
    /// seconds; 0 for never).
    pub fn window_at(&self, at_ms: i64) -> (i64, i64) {
        match self.window.calendar_bounds(at_ms) {
            Some((start, end)) => (start, end / 1000 + WINDOW_KEEP_S),
            None => (0, 0),
        }
    }

    /// What one usage event adds to this budget.
    pub fn amount(&self, agent: Option<&str>, usd: f64, tokens: f64) -> f64 {
        if self.agent.as_deref().is_some_and(|a| Some(a) != agent) {
            return 0.0;
        }
        match self.resource {
            Resource::Usd => usd,
            Resource::Tokens => tokens,
            _ => 0.0,
        }
    }
}

/// The wall clock in ms, for window keys (Redis's own clock decides expiries).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where this sidecar's fleet keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub namespace: String,
}

impl Keys {
    pub fn window(&self, budget: &str, start_ms: i64) -> String {
        format!("{}:b:{budget}:{start_ms}", self.namespace)
    }
    pub fn cursor(&self, store: &str) -> String {
        format!("{}:cursor:{store}", self.namespace)
    }
    pub fn alive(&self) -> String {
        format!("{}:alive", self.namespace)
    }
    pub fn channel(&self) -> String {
        format!("{}:totals", self.namespace)
    }
}

/// A window's totals as the scripts answer and publish them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireTotal {
    /// Budget name and window start.
    pub n: String,
    pub w: i64,
    pub used: f64,
    pub reserved: f64,
    /// The part of `used` that store `s` pushed.
    #[serde(default)]
    pub mine: Option<f64>,
    #[serde(default)]
    pub s: Option<String>,
}

impl WireTotal {
    /// The totals as store `me` sees them: another store's part is not this one's.
    pub fn total(&self, me: &str) -> FleetTotal {
        FleetTotal {
            window_start_ms: self.w,
            used: self.used,
            reserved: self.reserved,
            mine: self.mine.filter(|_| self.s.as_deref() == Some(me)),
        }
    }
}

/// What the fleet tells the ledger.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetUpdate {
    /// Whether Redis answered (`None`: this update does not say, e.g. a published message).
    pub reachable: Option<bool>,
    /// Sidecars alive when Redis last answered.
    pub instances: Option<u32>,
    /// Budget name → its window's totals.
    pub totals: Vec<(String, FleetTotal)>,
}

impl FleetUpdate {
    fn from_totals<'a>(
        totals: impl IntoIterator<Item = &'a WireTotal>,
        me: &str,
    ) -> Vec<(String, FleetTotal)> {
        totals
            .into_iter()
            .map(|t| (t.n.clone(), t.total(me)))
            .collect()
    }
}

/// Where fleet updates go (the ledger's inbox, wired by the daemon).
pub type UpdateSink = Box<dyn Fn(FleetUpdate) + Send + Sync>;

/// A Redis client for the configured URL: the password from `password_file` when given;
/// `rediss://` trusts `[tls] ca_file` when one is configured (else the system's roots).
pub fn client(
    config: &RedisConfig,
    tls: &crate::tls::ClientTls,
) -> Result<redis::Client, FleetError> {
    use redis::IntoConnectionInfo;
    let failed = |source| FleetError::Redis {
        url: crate::config::redact(&config.url),
        source,
    };
    let mut info = config.url.as_str().into_connection_info().map_err(failed)?;
    if let Some(path) = &config.password_file {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Password {
            path: path.clone(),
            source,
        })?;
        let password = text.lines().next().unwrap_or_default().trim().to_string();
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    if config.url.starts_with("rediss://") {
        crate::tls::ClientTls::install_default_provider();
        if tls.ca_pem().is_some() || tls.identity_pem().is_some() {
            let certificates = redis::TlsCertificates {
                client_tls: tls
                    .identity_pem()
                    .map(|(cert, key)| redis::ClientTlsConfig {
                        client_cert: cert.to_vec(),
                        client_key: key.to_vec(),
                    }),
                root_cert: tls.ca_pem().map(<[u8]>::to_vec),
            };
            return redis::Client::build_with_tls(info, certificates).map_err(failed);
        }
    }
    redis::Client::open(info).map_err(failed)
}

/// The namespace, instance and budgets of a configured fleet; `None` when no budget is shared.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    pub keys: Keys,
    pub budgets: Vec<FleetBudget>,
    pub redis: RedisConfig,
    /// This run's prefix for reservation ids (unique across restarts and sidecars).
    pub run: String,
    /// The local store's id ([`crate::store::Store::store_id`]): whose part of a total is
    /// this sidecar's. Set once the store is open.
    pub store: String,
}

impl FleetPlan {
    pub fn new(fleet: &FleetConfig, specs: &[BudgetSpec], instance: &str) -> Option<FleetPlan> {
        let redis = fleet.redis.clone()?;
        let budgets = FleetBudget::of(specs);
        if budgets.is_empty() {
            return None;
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Some(FleetPlan {
            keys: Keys {
                namespace: fleet.name.clone(),
            },
            budgets,
            redis,
            run: format!("{instance}:{}:{started}", std::process::id()),
            store: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::OnExceed;

    fn spec(
        name: &str,
        resource: Resource,
        window: Window,
        scope: Scope,
        fleet: bool,
    ) -> BudgetSpec {
        BudgetSpec {
            name: name.into(),
            resource,
            limit: 5.0,
            window,
            scope,
            warn_at: 0.9,
            on_exceed: OnExceed::SoftKill,
            fleet,
        }
    }

    #[test]
    fn only_shared_budgets_are_the_fleets_and_each_counts_its_own_resource_and_agent() {
        let specs = [
            spec("team-usd", Resource::Usd, Window::Month, Scope::All, true),
            spec(
                "coder-tokens",
                Resource::Tokens,
                Window::Lifetime,
                Scope::Agent("coder".into()),
                true,
            ),
            spec("local", Resource::Usd, Window::Day, Scope::All, false),
        ];
        let fleet = FleetBudget::of(&specs);
        assert_eq!(fleet.len(), 2);
        assert_eq!(fleet[0].amount(Some("x"), 0.25, 1000.0), 0.25);
        assert_eq!(fleet[1].amount(Some("coder"), 0.25, 1000.0), 1000.0);
        assert_eq!(fleet[1].amount(Some("reviewer"), 0.25, 1000.0), 0.0);
        // 2026-12-02T12:00:00Z: the month began 2026-12-01; its keys last a week past its end.
        let (start, expires) = fleet[0].window_at(1_796_212_800_000);
        assert_eq!(start, 1_796_083_200_000);
        assert_eq!(expires, 1_798_761_600 + 7 * 86_400);
        assert_eq!(fleet[1].window_at(1_796_212_800_000), (0, 0));
    }
}

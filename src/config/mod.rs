//! Configuration: the TOML file users write, parsed in two stages.
//!
//! `Raw*` structs mirror the file exactly (serde, `deny_unknown_fields`, spans kept where a value
//! needs a semantic check). [`Config::from_toml`] turns them into typed [`Config`] values and
//! reports every problem at once, each as `file:line:col: rule`, so a user fixes a file in one go.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::budget::{BudgetSpec, OnExceed, Resource, Scope, Window};

/// Where the daemon listens when the config says nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// The ADR-OS-019 metric prefix.
pub const DEFAULT_NAMESPACE: &str = "haios";
/// Distinct values one label may take before the rest fold into `__other__`.
pub const DEFAULT_MAX_LABEL_VALUES: usize = 1000;
/// Agent and model pairs the usage series keep by default, whatever each label's own count:
/// the per-label cap alone let 1,000 agents × 200 models make a million series.
pub const DEFAULT_MAX_SERIES: usize = 5000;
/// How often a target is sampled when its table does not say.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest sample interval accepted: below this the sidecar costs more than it measures.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(10);
/// Largest `POST /v1/events` body accepted.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Largest OTLP request body by default, decompressed: the OpenTelemetry Collector's own
/// default (20 MiB). Agents batch hundreds of log records with long attributes into one export
/// (Gemini CLI: 1.5 MB for 26 calls); an exporter drops a batch answered 413.
pub const DEFAULT_OTLP_MAX_BODY_BYTES: u64 = 20 * 1024 * 1024;
/// Largest body cap either setting accepts.
const MAX_BODY_CAP: i64 = 256 * 1024 * 1024;
/// Where the store lives when the config does not say: the working directory.
pub const DEFAULT_STORE_PATH: &str = "costmeter.db";
/// How long raw events and samples are kept before they fold into daily rollups.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(35 * 86_400);
/// Name of the implicit target when no `[[target]]` is configured: the sidecar itself.
pub const SELF_TARGET_NAME: &str = "costmeter";

/// A validated configuration. Every value has its final type; callers never re-check.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, `None` for built-in defaults.
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub store: StoreConfig,
    pub pricing: PricingConfig,
    pub targets: Vec<TargetConfig>,
    pub budgets: Vec<BudgetSpec>,
    pub enforcement: EnforcementConfig,
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// `[status_file] path`: where each run's task entries with their cost records are written;
    /// `{g}` stands for the run id.
    pub status_file: Option<PathBuf>,
    /// `[report]`: how often the weekly cost report is written, and where.
    pub report: Option<ReportConfig>,
    /// `[otlp]`: how the OTLP receiver attributes usage.
    pub otlp: OtlpConfig,
    /// `[tls]`: what costmeter's clients trust and present.
    pub tls: crate::tls::ClientFiles,
    /// `[proxy]`: the LLM API proxy.
    pub proxy: ProxyConfig,
    /// `[fleet]`: this sidecar among many.
    pub fleet: FleetConfig,
}

/// `[otlp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The agent of OTLP usage that names none (no `gen_ai.agent.name`, no `service.name`).
    pub default_agent: String,
    /// Where the OTLP/gRPC receiver listens; off when `None`.
    pub grpc_listen: Option<SocketAddr>,
    /// Largest OTLP request (HTTP body or gRPC message), decompressed, in bytes.
    pub max_body_bytes: u64,
    /// `grpc_tls_cert`/`grpc_tls_key`: the gRPC receiver speaks TLS.
    pub grpc_tls: Option<crate::tls::ServerFiles>,
}

/// Agent label of OTLP usage that names no agent and no service.
pub const DEFAULT_OTLP_AGENT: &str = "otlp";

#[derive(Debug, Clone, PartialEq)]
pub struct ReportConfig {
    pub every: Duration,
    pub dir: PathBuf,
}

/// What happens when a budget with `on_exceed = "soft_kill"` is exceeded.
#[derive(Debug, Clone, PartialEq)]
pub struct EnforcementConfig {
    /// The polite signal, by number.
    pub signal: i32,
    pub signal_name: String,
    /// How long survivors get before SIGKILL.
    pub grace: Duration,
    /// Log what would be done; signal nothing.
    pub dry_run: bool,
    /// POSTed on every budget transition.
    pub webhook: Option<String>,
}

/// Signals `[enforcement] signal` may name.
pub const SIGNALS: &[(&str, i32)] = &[
    ("SIGTERM", 15),
    ("SIGINT", 2),
    ("SIGHUP", 1),
    ("SIGQUIT", 3),
    ("SIGUSR1", 10),
    ("SIGUSR2", 12),
    ("SIGKILL", 9),
];
/// Default time between the polite signal and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Default share of a limit at which a budget warns.
pub const DEFAULT_WARN_AT: f64 = 0.9;

#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    pub path: PathBuf,
    pub retention: Duration,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct PricingConfig {
    /// A LiteLLM `model_prices_and_context_window.json` file.
    pub manifest: Option<PathBuf>,
    pub overrides: std::collections::HashMap<String, crate::pricing::PriceOverride>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// File holding the bearer token `/v1/*` writes must present.
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// Connections open at once, and how long a client may take over headers and body.
    pub limits: crate::server::Limits,
    /// Names besides IP literals and `localhost` that a request's `Host` may carry (DNS
    /// rebinding defence), lower case, without port.
    pub allowed_hosts: Vec<String>,
    /// `tls_cert`/`tls_key`: the listener speaks https.
    pub tls: Option<crate::tls::ServerFiles>,
}

/// Connections served at once by default: far above what scrapers and agents need, far below
/// the file descriptors a process gets.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default time to send a request's headers; also how long an idle connection stays open.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to send a request's body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub namespace: String,
    pub max_label_values: usize,
    /// Agent and model pairs of the usage series (`tokens_total` has four kinds per pair).
    pub max_series: usize,
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub name: String,
    pub selector: Selector,
    /// Meter the whole process tree below the selected processes.
    pub children: bool,
    pub sample_interval: Duration,
    /// Busy this long with no usage arriving is silent telemetry; `None`: never.
    pub silent_after: Option<Duration>,
}

/// `[[target]] silent_after` when not given.
pub const DEFAULT_SILENT_AFTER: Duration = Duration::from_secs(600);

/// How a target's processes are found. Exactly one per target.
#[derive(Debug, Clone)]
pub enum Selector {
    Pid(i32),
    PidFile(PathBuf),
    Match {
        /// Executable name, compared with the basename of `/proc/PID/exe` or, failing that, `comm`.
        exe: Option<String>,
        /// Regex searched in the command line, arguments joined by spaces.
        cmdline: Option<Regex>,
    },
    /// A cgroup: an absolute directory under a cgroup mount, or a path as `/proc/PID/cgroup`
    /// prints it.
    Cgroup(PathBuf),
    /// The sidecar's own process.
    OwnProcess,
    /// `costmeter exec`: every descendant of the sidecar, which is their subreaper. Not
    /// configurable; `exec` adds it.
    ExecChildren,
}

impl Selector {
    /// Short description for logs and `/readyz`.
    pub fn describe(&self) -> String {
        match self {
            Selector::Pid(pid) => format!("pid {pid}"),
            Selector::PidFile(path) => format!("pid_file {}", path.display()),
            Selector::Match { exe, cmdline } => format!(
                "match exe={} cmdline={}",
                exe.as_deref().unwrap_or("*"),
                cmdline.as_ref().map_or("*", |re| re.as_str())
            ),
            Selector::Cgroup(path) => format!("cgroup {}", path.display()),
            Selector::OwnProcess => "the costmeter process".to_string(),
            Selector::ExecChildren => "the command costmeter exec runs".to_string(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            source: None,
            server: ServerConfig {
                listen: DEFAULT_LISTEN
                    .parse()
                    .expect("the default listen address parses"),
                token_file: None,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                limits: crate::server::Limits {
                    max_connections: DEFAULT_MAX_CONNECTIONS,
                    header_timeout: DEFAULT_HEADER_TIMEOUT,
                    body_timeout: DEFAULT_BODY_TIMEOUT,
                },
                allowed_hosts: Vec::new(),
                tls: None,
            },
            metrics: MetricsConfig {
                namespace: DEFAULT_NAMESPACE.to_string(),
                max_label_values: DEFAULT_MAX_LABEL_VALUES,
                max_series: DEFAULT_MAX_SERIES,
            },
            store: StoreConfig {
                path: PathBuf::from(DEFAULT_STORE_PATH),
                retention: DEFAULT_RETENTION,
            },
            pricing: PricingConfig::default(),
            targets: vec![own_process_target()],
            budgets: Vec::new(),
            telemetry: telemetry_from_env(None, None, crate::telemetry::Mode::Strict),
            status_file: None,
            report: None,
            otlp: OtlpConfig {
                default_agent: DEFAULT_OTLP_AGENT.to_string(),
                grpc_listen: None,
                max_body_bytes: DEFAULT_OTLP_MAX_BODY_BYTES,
                grpc_tls: None,
            },
            tls: crate::tls::ClientFiles::default(),
            proxy: ProxyConfig::default(),
            fleet: FleetConfig::default(),
            enforcement: EnforcementConfig {
                signal: 15,
                signal_name: "SIGTERM".into(),
                grace: DEFAULT_GRACE,
                dry_run: false,
                webhook: None,
            },
        }
    }
}

fn own_process_target() -> TargetConfig {
    TargetConfig {
        name: SELF_TARGET_NAME.to_string(),
        selector: Selector::OwnProcess,
        children: true,
        sample_interval: DEFAULT_SAMPLE_INTERVAL,
        // costmeter reports no usage of its own.
        silent_after: None,
    }
}

/// One problem found in a config file, located as precisely as the file allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file '{path}': {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    format!("invalid configuration:\n{}", lines.join("\n"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    pricing: RawPricing,
    #[serde(default, rename = "target")]
    targets: Vec<Spanned<RawTarget>>,
    #[serde(default, rename = "budgets")]
    shorthand: RawShorthand,
    #[serde(default, rename = "budget")]
    budget_list: Vec<Spanned<RawBudget>>,
    #[serde(default)]
    enforcement: RawEnforcement,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    status_file: RawStatusFile,
    report: Option<RawReport>,
    #[serde(default)]
    otlp: RawOtlp,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    fleet: RawFleet,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<Spanned<String>>,
    client_cert: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlp {
    default_agent: Option<Spanned<String>>,
    grpc_listen: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<i64>>,
    grpc_tls_cert: Option<Spanned<String>>,
    grpc_tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    every: Option<Spanned<String>>,
    dir: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatusFile {
    path: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    mode: Option<Spanned<String>>,
    otlp_endpoint: Option<Spanned<String>>,
    protocol: Option<Spanned<String>>,
}

/// A number, or for byte amounts a size string such as "2GiB".
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawAmount {
    Number(f64),
    Text(String),
}

/// `[budgets]`: lifetime budgets over everything (ADR 19-O4).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShorthand {
    cpu_seconds: Option<Spanned<RawAmount>>,
    mem_bytes: Option<Spanned<RawAmount>>,
    disk_bytes: Option<Spanned<RawAmount>>,
    tokens: Option<Spanned<RawAmount>>,
    usd: Option<Spanned<RawAmount>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    name: Option<Spanned<String>>,
    resource: Option<Spanned<String>>,
    limit: Option<Spanned<RawAmount>>,
    window: Option<Spanned<String>>,
    agent: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    warn_at: Option<Spanned<f64>>,
    on_exceed: Option<Spanned<String>>,
    fleet: Option<Spanned<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnforcement {
    signal: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    dry_run: Option<bool>,
    webhook: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    /// Listening beyond loopback without a token must be asked for by name.
    allow_unauthenticated_remote: Option<bool>,
    max_body_bytes: Option<Spanned<i64>>,
    max_connections: Option<Spanned<i64>>,
    header_timeout: Option<Spanned<String>>,
    body_timeout: Option<Spanned<String>>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    tls_cert: Option<Spanned<String>>,
    tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    manifest: Option<Spanned<String>>,
    #[serde(default)]
    models: std::collections::HashMap<String, Spanned<crate::pricing::PriceOverride>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    namespace: Option<Spanned<String>>,
    max_label_values: Option<Spanned<i64>>,
    max_series: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<Spanned<String>>,
    pid: Option<Spanned<i64>>,
    pid_file: Option<Spanned<String>>,
    #[serde(rename = "match")]
    match_: Option<Spanned<RawMatch>>,
    cgroup: Option<Spanned<String>>,
    #[serde(rename = "self")]
    own_process: Option<Spanned<bool>>,
    children: Option<bool>,
    sample_interval: Option<Spanned<String>>,
    silent_after: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    exe: Option<Spanned<String>>,
    cmdline: Option<Spanned<String>>,
}

/// Turns byte offsets into `file:line:col` problems.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Locator<'a> {
    fn report(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.problems.push(Problem {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        });
    }
}

impl Locator<'_> {
    /// A duration field within [min, max]; outside it, or unparsable, it is reported and
    /// `default` stands in so validation goes on.
    fn duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        field: &str,
        min: Duration,
        max: Duration,
        default: Duration,
    ) -> Duration {
        let Some(text) = raw else { return default };
        match parse_duration(text.get_ref()) {
            Ok(d) if d < min => {
                let minimum = humantime::format_duration(min);
                self.report(
                    text.span(),
                    format!(
                        "{field}: '{}' is shorter than the minimum of {minimum}",
                        text.get_ref()
                    ),
                );
                default
            }
            Ok(d) if d > max => {
                let maximum = humantime::format_duration(max);
                self.report(
                    text.span(),
                    format!(
                        "{field}: '{}' is longer than the maximum of {maximum}",
                        text.get_ref()
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(message) => {
                self.report(text.span(), format!("{field}: {message}"));
                default
            }
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::from_toml(&path.display().to_string(), &text)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Loads `path` if given, else the built-in defaults.
    pub fn load_or_default(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            Some(path) => Config::load(path),
            None => Ok(Config::default()),
        }
    }

    /// Parses and validates TOML text; `file` names it in error messages.
    pub fn from_toml(file: &str, text: &str) -> Result<Config, ConfigError> {
        let mut locator = Locator {
            file,
            text,
            problems: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => {
                locator.report(
                    error.span().unwrap_or(0..0),
                    error.message().trim().to_string(),
                );
                return Err(ConfigError::Invalid(locator.problems));
            }
        };
        let config = validate(raw, &mut locator);
        if locator.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(locator.problems))
        }
    }
}

mod budgets;
mod fleet;
mod proxy;
mod targets;
#[cfg(test)]
mod tests;
mod validate;

use budgets::*;
pub use fleet::{DEFAULT_FLEET_NAME, FleetConfig, OnFleetUnavailable, RedisConfig, redact};
use fleet::{RawFleet, validate_fleet};
pub use proxy::{Provider, ProxyConfig, Upstream, base_url};
use proxy::{RawProxy, validate_proxy};
pub use targets::parse_duration;
use targets::*;
pub use validate::read_token_file;
use validate::*;

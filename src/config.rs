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
}

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
            },
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOtlp {
    default_agent: Option<Spanned<String>>,
    grpc_listen: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<i64>>,
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

fn validate(raw: RawConfig, locator: &mut Locator<'_>) -> Config {
    let defaults = Config::default();
    let token_file = raw
        .server
        .token_file
        .as_ref()
        .map(|t| PathBuf::from(t.get_ref()));
    if let (Some(spanned), Some(path)) = (raw.server.token_file.as_ref(), token_file.as_ref())
        && let Err(problem) = read_token_file(path)
    {
        locator.report(spanned.span(), format!("server.token_file: {problem}"));
    }
    let guarded = token_file.is_some() || raw.server.allow_unauthenticated_remote == Some(true);
    let listen = raw
        .server
        .listen
        .as_ref()
        .and_then(|l| listen_address(locator, l, "server.listen", "127.0.0.1:8000", guarded))
        .unwrap_or(defaults.server.listen);
    let max_body_bytes = body_cap(
        locator,
        raw.server.max_body_bytes.as_ref(),
        "server.max_body_bytes",
        DEFAULT_MAX_BODY_BYTES,
    );
    let max_connections = match &raw.server.max_connections {
        None => defaults.server.limits.max_connections,
        Some(max) => {
            let value = *max.get_ref();
            if !(16..=65_536).contains(&value) {
                locator.report(
                    max.span(),
                    format!("server.max_connections: {value} must be between 16 and 65536"),
                );
            }
            usize::try_from(value)
                .ok()
                .filter(|v| (16..=65_536).contains(v))
                .unwrap_or(defaults.server.limits.max_connections)
        }
    };
    let mut allowed_hosts = Vec::new();
    for name in raw.server.allowed_hosts.iter().flatten() {
        let value = name.get_ref().trim().to_ascii_lowercase();
        let valid = !value.is_empty()
            && value.len() <= 253
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if valid {
            allowed_hosts.push(value);
        } else {
            locator.report(
                name.span(),
                format!(
                    "server.allowed_hosts: '{}' is not a host name (letters, digits, '.', '-', '_'; no port, no scheme)",
                    name.get_ref().chars().take(80).collect::<String>()
                ),
            );
        }
    }
    let limits = crate::server::Limits {
        max_connections,
        header_timeout: locator.duration(
            raw.server.header_timeout.as_ref(),
            "server.header_timeout",
            Duration::from_millis(100),
            Duration::from_secs(3600),
            defaults.server.limits.header_timeout,
        ),
        body_timeout: locator.duration(
            raw.server.body_timeout.as_ref(),
            "server.body_timeout",
            Duration::from_millis(100),
            Duration::from_secs(3600),
            defaults.server.limits.body_timeout,
        ),
    };

    let store_path = raw.store.path.as_ref().map_or_else(
        || PathBuf::from(DEFAULT_STORE_PATH),
        |p| PathBuf::from(p.get_ref()),
    );
    let retention = locator.duration(
        raw.store.retention.as_ref(),
        "store.retention",
        Duration::from_secs(86_400),
        Duration::MAX,
        DEFAULT_RETENTION,
    );
    let mut overrides = std::collections::HashMap::new();
    for (model, price) in raw.pricing.models {
        let span = price.span();
        let price = price.into_inner();
        let values = [
            Some(price.input),
            Some(price.output),
            price.cache_read,
            price.cache_write,
        ];
        if values
            .iter()
            .flatten()
            .any(|v| !(v.is_finite() && (0.0..=crate::pricing::MAX_USD_PER_MILLION).contains(v)))
        {
            locator.report(
                span,
                format!("pricing.models.\"{model}\": prices are USD per million tokens and must be between 0 and 1000"),
            );
        }
        overrides.insert(model, price);
    }
    let pricing = PricingConfig {
        manifest: raw
            .pricing
            .manifest
            .as_ref()
            .map(|m| PathBuf::from(m.get_ref())),
        overrides,
    };

    let namespace = match raw.metrics.namespace {
        None => defaults.metrics.namespace.clone(),
        Some(ns) => {
            if !is_metric_name_prefix(ns.get_ref()) {
                locator.report(
                    ns.span(),
                    format!(
                        "metrics.namespace: '{}' must match [a-zA-Z_][a-zA-Z0-9_]* (a Prometheus metric name prefix)",
                        ns.get_ref()
                    ),
                );
            }
            ns.into_inner()
        }
    };
    let max_label_values = count_setting(
        locator,
        raw.metrics.max_label_values.as_ref(),
        "metrics.max_label_values",
        defaults.metrics.max_label_values,
    );
    let max_series = count_setting(
        locator,
        raw.metrics.max_series.as_ref(),
        "metrics.max_series",
        defaults.metrics.max_series,
    );

    let mut targets: Vec<TargetConfig> = Vec::new();
    for raw_target in raw.targets {
        let name_span = raw_target.get_ref().name.as_ref().map(Spanned::span);
        if let Some(target) = validate_target(raw_target, locator) {
            if targets.iter().any(|t| t.name == target.name) {
                locator.report(
                    name_span.unwrap_or(0..0),
                    format!(
                        "target.name: '{}' is used by two targets; names must be unique",
                        target.name
                    ),
                );
            }
            targets.push(target);
        }
    }
    if targets.is_empty() {
        targets.push(own_process_target());
    }
    let target_names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let budgets = validate_budgets(raw.shorthand, raw.budget_list, &target_names, locator);
    let enforcement = validate_enforcement(raw.enforcement, locator);
    let telemetry = validate_telemetry(raw.telemetry, locator);
    let report = raw.report.map(|r| {
        let every = locator.duration(
            r.every.as_ref(),
            "report.every",
            Duration::from_secs(60),
            Duration::MAX,
            Duration::from_secs(7 * 86_400),
        );
        ReportConfig {
            every,
            dir: r
                .dir
                .map_or_else(|| PathBuf::from("reports"), |d| PathBuf::from(d.get_ref())),
        }
    });
    let status_file = raw.status_file.path.as_ref().map(|p| {
        if !p.get_ref().contains("{g}") {
            locator.report(
                p.span(),
                "status_file.path: must contain {g}, which stands for the run id (one file a run)",
            );
        }
        PathBuf::from(p.get_ref())
    });

    let otlp = OtlpConfig {
        default_agent: match raw.otlp.default_agent {
            None => defaults.otlp.default_agent.clone(),
            Some(agent) => {
                let value = agent.get_ref();
                if value.trim().is_empty()
                    || value.chars().any(char::is_control)
                    || value.chars().count() > crate::ingest::event::MAX_LABEL_CHARS
                {
                    locator.report(
                        agent.span(),
                        format!(
                            "otlp.default_agent: must be 1 to {} characters without control characters",
                            crate::ingest::event::MAX_LABEL_CHARS
                        ),
                    );
                    defaults.otlp.default_agent.clone()
                } else {
                    value.clone()
                }
            }
        },
        grpc_listen: raw.otlp.grpc_listen.as_ref().and_then(|l| {
            listen_address(locator, l, "otlp.grpc_listen", "127.0.0.1:4317", guarded)
        }),
        max_body_bytes: body_cap(
            locator,
            raw.otlp.max_body_bytes.as_ref(),
            "otlp.max_body_bytes",
            DEFAULT_OTLP_MAX_BODY_BYTES,
        ),
    };
    Config {
        source: None,
        server: ServerConfig {
            listen,
            token_file,
            max_body_bytes,
            limits,
            allowed_hosts,
        },
        store: StoreConfig {
            path: store_path,
            retention,
        },
        pricing,
        metrics: MetricsConfig {
            namespace,
            max_label_values,
            max_series,
        },
        targets,
        budgets,
        enforcement,
        telemetry,
        status_file,
        report,
        otlp,
    }
}

/// Shortest bearer token accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Reads the bearer token from `path`: the file's text, trimmed, at least
/// [`MIN_TOKEN_CHARS`] long.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let token = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read '{}': {error}", path.display()))?;
    let token = token.trim().to_string();
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(format!(
            "'{}' holds a token of fewer than {MIN_TOKEN_CHARS} characters",
            path.display()
        ));
    }
    Ok(token)
}

/// A count between 1 and a million.
fn count_setting(
    locator: &mut Locator<'_>,
    raw: Option<&Spanned<i64>>,
    key: &str,
    default: usize,
) -> usize {
    let Some(max) = raw else {
        return default;
    };
    let value = *max.get_ref();
    if !(1..=1_000_000).contains(&value) {
        locator.report(
            max.span(),
            format!("{key}: {value} must be between 1 and 1000000"),
        );
    }
    usize::try_from(value).unwrap_or(default)
}

/// A body cap in bytes, between 1 KiB and 256 MiB.
fn body_cap(locator: &mut Locator<'_>, raw: Option<&Spanned<i64>>, key: &str, default: u64) -> u64 {
    let Some(max) = raw else {
        return default;
    };
    let value = *max.get_ref();
    if !(1024..=MAX_BODY_CAP).contains(&value) {
        locator.report(
            max.span(),
            format!("{key}: {value} must be between 1024 and {MAX_BODY_CAP}"),
        );
    }
    u64::try_from(value).unwrap_or(default)
}

/// Parses a listen address. Beyond loopback it must be `guarded` (a token, or the explicit
/// opt-out), or anyone on the network could write usage and order kills.
fn listen_address(
    locator: &mut Locator<'_>,
    raw: &Spanned<String>,
    field: &str,
    example: &str,
    guarded: bool,
) -> Option<SocketAddr> {
    match raw.get_ref().parse::<SocketAddr>() {
        Err(_) => {
            locator.report(
                raw.span(),
                format!(
                    "{field}: '{}' is not an address and port such as \"{example}\"",
                    raw.get_ref()
                ),
            );
            None
        }
        Ok(addr) if !addr.ip().is_loopback() && !guarded => {
            locator.report(
                raw.span(),
                format!(
                    "{field}: {addr} is reachable from other hosts; set server.token_file, or server.allow_unauthenticated_remote = true if something else guards it"
                ),
            );
            None
        }
        Ok(addr) => Some(addr),
    }
}

/// The endpoint and protocol from the config, else the standard `OTEL_EXPORTER_OTLP_*`
/// variables.
fn telemetry_from_env(
    endpoint: Option<String>,
    protocol: Option<crate::telemetry::Protocol>,
    mode: crate::telemetry::Mode,
) -> crate::telemetry::TelemetryConfig {
    use crate::telemetry::Protocol;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let endpoint = endpoint
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let protocol = protocol.unwrap_or_else(|| {
        match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            Some("http/protobuf") => Protocol::HttpProtobuf,
            _ => Protocol::Grpc,
        }
    });
    crate::telemetry::TelemetryConfig {
        mode,
        endpoint,
        protocol,
    }
}

fn validate_telemetry(
    raw: RawTelemetry,
    locator: &mut Locator<'_>,
) -> crate::telemetry::TelemetryConfig {
    use crate::telemetry::{Mode, Protocol};
    let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
        None | Some(("strict", _)) => Mode::Strict,
        Some(("dev_fast", _)) => Mode::DevFast,
        Some((other, span)) => {
            locator.report(
                span,
                format!("telemetry.mode: '{other}' is not strict or dev_fast"),
            );
            Mode::Strict
        }
    };
    let protocol = match raw
        .protocol
        .as_ref()
        .map(|p| (p.get_ref().as_str(), p.span()))
    {
        None => None,
        Some(("grpc", _)) => Some(Protocol::Grpc),
        Some(("http/protobuf", _)) => Some(Protocol::HttpProtobuf),
        Some((other, span)) => {
            locator.report(
                span,
                format!("telemetry.protocol: '{other}' is not grpc or http/protobuf"),
            );
            None
        }
    };
    let endpoint = raw.otlp_endpoint.as_ref().map(|e| {
        let url = e.get_ref();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            locator.report(
                e.span(),
                format!("telemetry.otlp_endpoint: '{url}' must be an http:// or https:// URL"),
            );
        }
        url.clone()
    });
    telemetry_from_env(endpoint, protocol, mode)
}

fn amount(
    raw: &Spanned<RawAmount>,
    field: &str,
    bytes: bool,
    locator: &mut Locator<'_>,
) -> Option<f64> {
    let value = match raw.get_ref() {
        RawAmount::Number(n) => *n,
        RawAmount::Text(text) if bytes => match text.parse::<bytesize::ByteSize>() {
            Ok(size) => size.as_u64() as f64,
            Err(_) => {
                locator.report(
                    raw.span(),
                    format!("{field}: '{text}' is not a size such as \"512MiB\" or \"2GiB\""),
                );
                return None;
            }
        },
        RawAmount::Text(text) => {
            locator.report(raw.span(), format!("{field}: '{text}' must be a number"));
            return None;
        }
    };
    if value.is_finite() && value > 0.0 {
        Some(value)
    } else {
        locator.report(
            raw.span(),
            format!("{field}: the limit must be a number above 0, got {value}"),
        );
        None
    }
}

fn validate_budgets(
    shorthand: RawShorthand,
    list: Vec<Spanned<RawBudget>>,
    targets: &[String],
    locator: &mut Locator<'_>,
) -> Vec<BudgetSpec> {
    let mut budgets: Vec<BudgetSpec> = Vec::new();
    let shorthand_fields = [
        (Resource::CpuSeconds, shorthand.cpu_seconds),
        (Resource::MemBytes, shorthand.mem_bytes),
        (Resource::DiskBytes, shorthand.disk_bytes),
        (Resource::Tokens, shorthand.tokens),
        (Resource::Usd, shorthand.usd),
    ];
    for (resource, raw) in shorthand_fields {
        let Some(raw) = raw else { continue };
        let bytes = matches!(resource, Resource::MemBytes | Resource::DiskBytes);
        let field = format!("budgets.{}", resource.label());
        if let Some(limit) = amount(&raw, &field, bytes, locator) {
            budgets.push(BudgetSpec {
                name: format!("lifetime-{}", resource.label()),
                resource,
                limit,
                window: Window::Lifetime,
                scope: Scope::All,
                warn_at: DEFAULT_WARN_AT,
                on_exceed: OnExceed::SoftKill,
            });
        }
    }
    for raw in list {
        if let Some(budget) = validate_budget(raw, targets, &budgets, locator) {
            budgets.push(budget);
        }
    }
    budgets
}

fn validate_budget(
    raw: Spanned<RawBudget>,
    targets: &[String],
    earlier: &[BudgetSpec],
    locator: &mut Locator<'_>,
) -> Option<BudgetSpec> {
    let span = raw.span();
    let raw = raw.into_inner();
    let before = locator.problems.len();
    let name = match &raw.name {
        Some(name)
            if !name.get_ref().is_empty() && !name.get_ref().chars().any(char::is_control) =>
        {
            if earlier.iter().any(|b| &b.name == name.get_ref()) {
                locator.report(
                    name.span(),
                    format!(
                        "budget.name: '{}' is used twice; names must be unique",
                        name.get_ref()
                    ),
                );
            }
            name.get_ref().clone()
        }
        Some(name) => {
            locator.report(
                name.span(),
                "budget.name: must be non-empty and free of control characters",
            );
            String::new()
        }
        None => {
            locator.report(span.clone(), "budget: 'name' is required");
            String::new()
        }
    };
    let resource = match &raw.resource {
        None => {
            locator.report(
                span.clone(),
                format!("budget '{name}': 'resource' is required (usd, tokens, cpu_seconds, mem_bytes or disk_bytes)"),
            );
            None
        }
        Some(r) => {
            let parsed = Resource::parse(r.get_ref());
            if parsed.is_none() {
                locator.report(
                    r.span(),
                    format!(
                        "budget.resource: '{}' is not one of usd, tokens, cpu_seconds, mem_bytes, disk_bytes",
                        r.get_ref()
                    ),
                );
            }
            parsed
        }
    };
    let bytes = matches!(resource, Some(Resource::MemBytes | Resource::DiskBytes));
    let limit = match &raw.limit {
        None => {
            locator.report(
                span.clone(),
                format!("budget '{name}': 'limit' is required"),
            );
            None
        }
        Some(limit) => amount(limit, "budget.limit", bytes, locator),
    };
    let window = match &raw.window {
        None => Some(Window::Lifetime),
        Some(w) => match Window::parse(w.get_ref()) {
            Ok(window) => Some(window),
            Err(message) => {
                locator.report(w.span(), format!("budget.window: {message}"));
                None
            }
        },
    };
    let warn_at = match &raw.warn_at {
        None => DEFAULT_WARN_AT,
        Some(w) => {
            let value = *w.get_ref();
            if !(value > 0.0 && value < 1.0) {
                locator.report(
                    w.span(),
                    format!(
                        "budget.warn_at: {value} must be above 0 and below 1 (a share of the limit)"
                    ),
                );
            }
            value
        }
    };
    let on_exceed = match &raw.on_exceed {
        None => OnExceed::SoftKill,
        Some(o) => match o.get_ref().as_str() {
            "soft_kill" => OnExceed::SoftKill,
            "alert" => OnExceed::Alert,
            other => {
                locator.report(
                    o.span(),
                    format!("budget.on_exceed: '{other}' is not soft_kill or alert"),
                );
                OnExceed::Alert
            }
        },
    };
    let scope = match (&raw.agent, &raw.target) {
        (Some(a), Some(_)) => {
            locator.report(
                a.span(),
                format!("budget '{name}': give agent or target, not both"),
            );
            Scope::All
        }
        (Some(a), None) => {
            if let Some(r) = resource.filter(|r| !r.is_usage()) {
                locator.report(
                    a.span(),
                    format!(
                        "budget.agent: a {} budget is scoped by target, not agent (agents report usd and tokens)",
                        r.label()
                    ),
                );
            }
            Scope::Agent(a.get_ref().clone())
        }
        (None, Some(t)) => {
            if let Some(r) = resource.filter(|r| r.is_usage()) {
                locator.report(
                    t.span(),
                    format!(
                        "budget.target: a {} budget is scoped by agent, not target (targets are processes)",
                        r.label()
                    ),
                );
            } else if !targets.contains(t.get_ref()) {
                locator.report(
                    t.span(),
                    format!(
                        "budget.target: '{}' is not a configured target ({})",
                        t.get_ref(),
                        targets.join(", ")
                    ),
                );
            }
            Scope::Target(t.get_ref().clone())
        }
        (None, None) => Scope::All,
    };
    if locator.problems.len() > before {
        return None;
    }
    Some(BudgetSpec {
        name,
        resource: resource?,
        limit: limit?,
        window: window?,
        scope,
        warn_at,
        on_exceed,
    })
}

fn validate_enforcement(raw: RawEnforcement, locator: &mut Locator<'_>) -> EnforcementConfig {
    let (signal_name, signal) = match &raw.signal {
        None => ("SIGTERM".to_string(), 15),
        Some(s) => match SIGNALS
            .iter()
            .find(|(name, _)| *name == s.get_ref().as_str())
        {
            Some((name, number)) => (name.to_string(), *number),
            None => {
                let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
                locator.report(
                    s.span(),
                    format!(
                        "enforcement.signal: '{}' is not one of {}",
                        s.get_ref(),
                        names.join(", ")
                    ),
                );
                ("SIGTERM".to_string(), 15)
            }
        },
    };
    let grace = locator.duration(
        raw.grace.as_ref(),
        "enforcement.grace",
        Duration::ZERO,
        Duration::from_secs(3600),
        DEFAULT_GRACE,
    );
    let webhook = raw.webhook.as_ref().map(|w| {
        let url = w.get_ref();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            locator.report(
                w.span(),
                format!("enforcement.webhook: '{url}' must be an http:// or https:// URL"),
            );
        }
        url.clone()
    });
    EnforcementConfig {
        signal,
        signal_name,
        grace,
        dry_run: raw.dry_run.unwrap_or(false),
        webhook,
    }
}

fn validate_target(raw: Spanned<RawTarget>, locator: &mut Locator<'_>) -> Option<TargetConfig> {
    let span = raw.span();
    let raw = raw.into_inner();
    let before = locator.problems.len();

    let name = match &raw.name {
        None => {
            locator.report(span.clone(), "target: 'name' is required");
            String::new()
        }
        Some(name) => {
            if name.get_ref().is_empty() || name.get_ref().chars().any(char::is_control) {
                locator.report(
                    name.span(),
                    "target.name: must be non-empty and free of control characters",
                );
            }
            name.get_ref().clone()
        }
    };

    let mut selectors = Vec::new();
    if let Some(pid) = &raw.pid {
        let value = *pid.get_ref();
        if !(2..=i64::from(i32::MAX)).contains(&value) {
            locator.report(
                pid.span(),
                format!("target.pid: {value} is not a process id (must be at least 2; pid 1 is never metered as a target)"),
            );
        }
        selectors.push(("pid", Selector::Pid(i32::try_from(value).unwrap_or(0))));
    }
    if let Some(path) = &raw.pid_file {
        if path.get_ref().is_empty() {
            locator.report(path.span(), "target.pid_file: must be a path");
        }
        selectors.push(("pid_file", Selector::PidFile(PathBuf::from(path.get_ref()))));
    }
    if let Some(matcher) = &raw.match_ {
        let exe = matcher.get_ref().exe.as_ref().map(|e| e.get_ref().clone());
        let cmdline = match &matcher.get_ref().cmdline {
            None => None,
            Some(pattern) => match Regex::new(pattern.get_ref()) {
                Ok(re) => Some(re),
                Err(error) => {
                    locator.report(
                        pattern.span(),
                        format!(
                            "target.match.cmdline: not a valid regex: {}",
                            // The regex crate draws a caret under the pattern; keep the verdict.
                            error.to_string().lines().last().unwrap_or_default().trim()
                        ),
                    );
                    None
                }
            },
        };
        if matcher.get_ref().exe.is_none() && matcher.get_ref().cmdline.is_none() {
            locator.report(
                matcher.span(),
                "target.match: give 'exe', 'cmdline' or both",
            );
        }
        selectors.push(("match", Selector::Match { exe, cmdline }));
    }
    if let Some(path) = &raw.cgroup {
        if !path.get_ref().starts_with('/') {
            locator.report(
                path.span(),
                format!(
                    "target.cgroup: '{}' must be absolute: a directory under /sys/fs/cgroup or a path as /proc/PID/cgroup shows it",
                    path.get_ref()
                ),
            );
        }
        selectors.push(("cgroup", Selector::Cgroup(PathBuf::from(path.get_ref()))));
    }
    if let Some(own) = &raw.own_process {
        if *own.get_ref() {
            selectors.push(("self", Selector::OwnProcess));
        } else {
            locator.report(
                own.span(),
                "target.self: only 'true' is meaningful; remove the key",
            );
        }
    }
    let selector = match selectors.len() {
        1 => selectors.pop().map(|(_, s)| s),
        0 => {
            locator.report(
                span.clone(),
                format!(
                    "target '{name}': give exactly one selector: pid, pid_file, match, cgroup or self"
                ),
            );
            None
        }
        _ => {
            let names: Vec<&str> = selectors.iter().map(|(n, _)| *n).collect();
            locator.report(
                span.clone(),
                format!(
                    "target '{name}': has {} selectors ({}); give exactly one",
                    names.len(),
                    names.join(", ")
                ),
            );
            None
        }
    };

    let sample_interval = locator.duration(
        raw.sample_interval.as_ref(),
        "target.sample_interval",
        MIN_SAMPLE_INTERVAL,
        Duration::MAX,
        DEFAULT_SAMPLE_INTERVAL,
    );

    if locator.problems.len() > before {
        return None;
    }
    Some(TargetConfig {
        name,
        selector: selector?,
        children: raw.children.unwrap_or(true),
        sample_interval,
    })
}

/// Parses durations such as "500ms", "1s", "24h", "35d".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| {
        format!("'{text}' is not a duration such as \"500ms\", \"1s\", \"24h\" or \"7d\" ({error})")
    })
}

fn is_metric_name_prefix(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_toml("c.toml", text) {
            Ok(_) => Vec::new(),
            Err(error) => error.problems().iter().map(Problem::to_string).collect(),
        }
    }

    #[test]
    fn empty_file_gives_defaults_and_meters_itself() {
        let config = Config::from_toml("c.toml", "").expect("empty config is valid");
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.metrics.namespace, "haios");
        assert_eq!(config.targets.len(), 1);
        assert!(matches!(config.targets[0].selector, Selector::OwnProcess));
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let found = problems("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("c.toml:3:1: unknown field `listn`"),
            "{found:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
[server]
listen = "nowhere"

[[target]]
name = "a"
sample_interval = "soon"
pid = 12

[[target]]
name = "b"
"#;
        let found = problems(text);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("c.toml:3:10: server.listen: 'nowhere'"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("c.toml:7:19: target.sample_interval: 'soon'"),
            "{found:?}"
        );
        assert!(
            found[2].contains("target 'b': give exactly one selector"),
            "{found:?}"
        );
    }

    #[test]
    fn two_selectors_are_refused() {
        let found = problems("[[target]]\nname = \"x\"\npid = 5\ncgroup = \"/a\"\n");
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("has 2 selectors (pid, cgroup)"),
            "{found:?}"
        );
    }

    #[test]
    fn match_selector_compiles_its_regex() {
        let config = Config::from_toml(
            "c.toml",
            "[[target]]\nname = \"x\"\nmatch = { exe = \"python3\", cmdline = \"agent\\\\.py\" }\n",
        )
        .expect("valid");
        match &config.targets[0].selector {
            Selector::Match { exe, cmdline } => {
                assert_eq!(exe.as_deref(), Some("python3"));
                assert!(
                    cmdline
                        .as_ref()
                        .is_some_and(|re| re.is_match("python3 agent.py"))
                );
            }
            other => panic!("unexpected selector {other:?}"),
        }
        let bad = problems("[[target]]\nname = \"x\"\nmatch = { cmdline = \"(\" }\n");
        assert!(
            bad[0].contains("target.match.cmdline: not a valid regex"),
            "{bad:?}"
        );
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé d", 7), (2, 4));
        assert_eq!(line_column("x", 0), (1, 1));
    }
}

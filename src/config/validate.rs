//! The whole file checked: every section turned into its typed value, every problem kept.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::*;

pub(super) fn validate(raw: RawConfig, locator: &mut Locator<'_>) -> Config {
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
    let budgets = validate_budgets(
        raw.shorthand,
        raw.budget_list,
        &target_names,
        raw.fleet.has_redis(),
        locator,
    );
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
        grpc_tls: server_files(
            locator,
            raw.otlp.grpc_tls_cert.as_ref(),
            raw.otlp.grpc_tls_key.as_ref(),
            ("otlp.grpc_tls_cert", "otlp.grpc_tls_key"),
        ),
    };
    let server_tls = server_files(
        locator,
        raw.server.tls_cert.as_ref(),
        raw.server.tls_key.as_ref(),
        ("server.tls_cert", "server.tls_key"),
    );
    let tls = client_files(locator, &raw.tls);
    let proxy = validate_proxy(locator, &raw.proxy);
    let fleet = validate_fleet(locator, &raw.fleet);
    Config {
        source: None,
        server: ServerConfig {
            listen,
            token_file,
            max_body_bytes,
            limits,
            allowed_hosts,
            tls: server_tls,
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
        tls,
        proxy,
        fleet,
    }
}

/// A listener's certificate and key: both or neither, each a PEM file, the key the
/// certificate's. Problems are reported at the setting.
fn server_files(
    locator: &mut Locator<'_>,
    cert: Option<&Spanned<String>>,
    key: Option<&Spanned<String>>,
    (cert_key, key_key): (&str, &str),
) -> Option<crate::tls::ServerFiles> {
    match (cert, key) {
        (None, None) => None,
        (Some(cert), None) => {
            locator.report(
                cert.span(),
                format!("{cert_key}: needs {key_key} beside it"),
            );
            None
        }
        (None, Some(key)) => {
            locator.report(key.span(), format!("{key_key}: needs {cert_key} beside it"));
            None
        }
        (Some(cert), Some(key)) => {
            let files = crate::tls::ServerFiles {
                cert: PathBuf::from(cert.get_ref()),
                key: PathBuf::from(key.get_ref()),
            };
            match crate::tls::certified_key(&files) {
                Ok(_) => Some(files),
                Err(problem) => {
                    let span = match problem {
                        crate::tls::TlsError::NoKey { .. } => key.span(),
                        _ => cert.span(),
                    };
                    locator.report(span, format!("{cert_key}: {problem}"));
                    None
                }
            }
        }
    }
}

/// `[tls]`: the CA file must hold certificates; a client certificate needs its key.
fn client_files(locator: &mut Locator<'_>, raw: &RawTls) -> crate::tls::ClientFiles {
    let ca_file = raw.ca_file.as_ref().and_then(|ca| {
        let path = PathBuf::from(ca.get_ref());
        match crate::tls::read_certs(&path) {
            Ok(_) => Some(path),
            Err(problem) => {
                locator.report(ca.span(), format!("tls.ca_file: {problem}"));
                None
            }
        }
    });
    let identity = server_files(
        locator,
        raw.client_cert.as_ref(),
        raw.client_key.as_ref(),
        ("tls.client_cert", "tls.client_key"),
    );
    crate::tls::ClientFiles {
        ca_file,
        client_cert: identity.as_ref().map(|f| f.cert.clone()),
        client_key: identity.map(|f| f.key),
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
pub(super) fn count_setting(
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
pub(super) fn body_cap(
    locator: &mut Locator<'_>,
    raw: Option<&Spanned<i64>>,
    key: &str,
    default: u64,
) -> u64 {
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
pub(super) fn listen_address(
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
pub(super) fn telemetry_from_env(
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

pub(super) fn validate_telemetry(
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

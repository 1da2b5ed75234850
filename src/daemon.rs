//! `costmeter run`: wires sources, ledger and HTTP together and handles signals.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::api::{self, AppState};
use crate::config::{Config, Selector, TargetConfig};
use crate::enforce::{self, Enforcer, EnforcerInput, IdentityBook};
use crate::health::Health;
use crate::ledger::{Ledger, LedgerInput, LedgerSender};
use crate::metrics::Metrics;
use crate::notify::Webhook;
use crate::sampler::{self, Sampler, SamplerHandle};
use crate::telemetry::ExportHealth;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "cannot listen on {addr}: {source} (is another costmeter running? set [server] listen)"
    )]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot listen for OTLP/gRPC on {addr}: {source} (is a collector already on that port? set [otlp] grpc_listen)"
    )]
    BindGrpc {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the sampler thread: {0}")]
    Sampler(#[source] std::io::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("cannot start the ledger thread: {0}")]
    LedgerThread(#[source] std::io::Error),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("cannot start the fleet threads: {0}")]
    FleetThread(#[source] std::io::Error),
    #[error("costmeter exec: {0}")]
    Exec(String),
    #[error("cannot read server.token_file '{path}': {reason}")]
    Token {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Exit status of `costmeter exec` when a budget soft-killed the command.
pub const EXIT_BUDGET_KILLED: u8 = 86;

/// The command `costmeter exec` runs.
#[derive(Debug, Clone)]
pub struct ExecCommand {
    pub argv: Vec<std::ffi::OsString>,
    /// The target name its process tree is metered under.
    pub target: String,
}

/// How the command ended, for the exit status.
#[derive(Debug, Clone, Copy)]
enum ChildEnd {
    Exited(i32),
    Signalled(i32),
}

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP reloads the config.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    serve(config, None).await.map(|_| ())
}

/// Runs `command` as the metered target with the daemon around it, until it exits. Returns
/// the exit status to leave with: the command's, or [`EXIT_BUDGET_KILLED`].
pub async fn exec(mut config: Config, command: ExecCommand) -> Result<u8, DaemonError> {
    // Orphans of the command are reparented to costmeter, reaped here and counted.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| DaemonError::Exec(format!("cannot become a child subreaper: {e}")))?;
    let named = config.targets.iter().find(|t| t.name == command.target);
    let interval = named.map_or(crate::config::DEFAULT_SAMPLE_INTERVAL, |t| {
        t.sample_interval
    });
    let silent_after = named.map_or(Some(crate::config::DEFAULT_SILENT_AFTER), |t| {
        t.silent_after
    });
    config
        .targets
        .retain(|t| t.name != command.target && !matches!(t.selector, Selector::OwnProcess));
    config.targets.push(TargetConfig {
        name: command.target.clone(),
        selector: Selector::ExecChildren,
        children: true,
        sample_interval: interval,
        silent_after,
    });
    serve(config, Some(command)).await
}

async fn serve(mut config: Config, command: Option<ExecCommand>) -> Result<u8, DaemonError> {
    // Connections must never take the descriptors the sampler, store and enforcer need.
    let soft_limit = crate::server::raise_fd_limit();
    let listeners = if config.otlp.grpc_listen.is_some() {
        2
    } else {
        1
    };
    let cap = crate::server::clamp_connections(
        config.server.limits.max_connections,
        soft_limit,
        listeners,
    );
    if cap < config.server.limits.max_connections {
        warn!(
            configured = config.server.limits.max_connections,
            clamped = cap,
            fd_limit = soft_limit,
            "server.max_connections is above what the open-file limit leaves room for; clamped"
        );
        config.server.limits.max_connections = cap;
    }
    let metrics = Arc::new(Metrics::new(
        &config.metrics.namespace,
        config.metrics.max_label_values,
        config.metrics.max_series,
    ));
    let health = Arc::new(Health::default());
    let token = read_token(&config)?;
    let (ledger, baselines) = Ledger::open(&config, metrics.clone(), health.clone(), now_ms())?;
    // The price table's parse is over: give back what it freed (on this thread, before an
    // await can move the task).
    crate::memory::release_freed();
    if let Some(command) = &command {
        // Relaunch guard: a command started into an exhausted budget would only be stopped
        // again; a supervisor gets the same answer every time.
        let holding = ledger.holding(&command.target, now_ms());
        if !holding.is_empty() {
            let program = command
                .argv
                .first()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            for status in &holding {
                let line = status.describe_excess();
                error!(event = "BUDGET_EXCEEDED", budget = %status.name, command = %program, "{line}; the command is not started");
                eprintln!(
                    "costmeter: {line}; '{program}' was not started (exit status {EXIT_BUDGET_KILLED})"
                );
            }
            return Ok(EXIT_BUDGET_KILLED);
        }
    }
    let book = IdentityBook::default();
    let export_health = Arc::new(ExportHealth::default());
    // One root store and client identity for every client: the webhook and span export.
    let client_tls = crate::tls::ClientTls::load(&config.tls)?;
    let (telemetry, exporter) =
        crate::telemetry::spawn(&config.telemetry, export_health.clone(), &client_tls)
            .map_err(|e| DaemonError::Exec(e.to_string()))?
            .unzip();
    if telemetry.is_some() {
        health.watch_export(export_health);
    }
    let webhook = match &config.enforcement.webhook {
        Some(url) => Some(
            Webhook::spawn(url.clone(), &client_tls, health.clone())
                .map_err(DaemonError::LedgerThread)?,
        ),
        None => None,
    };
    // The enforcer reports back to the ledger; the ledger's sender exists only once it runs,
    // so the report path goes through a slot filled right after.
    let report_slot: Arc<Mutex<Option<LedgerSender>>> = Arc::default();
    let enforcer = {
        let slot = report_slot.clone();
        enforce::spawn(
            Enforcer::new(config.enforcement.clone(), &config.targets, book.clone()),
            move |report| {
                let sender = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                if let Some(sender) = sender {
                    let _ = sender.blocking_send(LedgerInput::Enforced(report));
                }
            },
        )
        .map_err(DaemonError::LedgerThread)?
    };
    let spend = ledger.spend();
    let view = ledger.view();
    let instance = config.fleet.instance_name(config.server.listen);
    let fleet_plan = crate::fleet::FleetPlan::new(&config.fleet, &config.budgets, &instance);
    let fleet_link = Arc::new(crate::fleet::pusher::Link::default());
    let mut ledger = ledger.with_actions(Some(enforcer.clone()), webhook, telemetry)?;
    if fleet_plan.is_some() {
        ledger = ledger.with_fleet(
            fleet_link.clone(),
            config.fleet.on_fleet_unavailable,
            &config.fleet.name,
        );
    }
    let (ledger_tx, ledger_thread) = ledger.spawn().map_err(DaemonError::LedgerThread)?;
    *report_slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ledger_tx.clone());

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(DaemonError::Serve)?;
    let otlp_max = usize::try_from(config.otlp.max_body_bytes).unwrap_or(usize::MAX);
    // Two of the largest bodies may be decoded at once; more wait their turn.
    let decode_gate = Arc::new(crate::otlp::DecodeGate::new(otlp_max.saturating_mul(2)));
    // The listeners' certificates, re-read on reload.
    let server_tls = config
        .server
        .tls
        .as_ref()
        .map(|files| crate::tls::ServerTls::load(files, &[b"http/1.1"]))
        .transpose()?;
    let grpc_tls = config
        .otlp
        .grpc_tls
        .as_ref()
        .map(|files| crate::tls::ServerTls::load(files, &[b"h2"]))
        .transpose()?;
    let listener_tls: Vec<crate::tls::ServerTls> =
        server_tls.iter().chain(&grpc_tls).cloned().collect();
    let grpc = match config.otlp.grpc_listen {
        None => None,
        Some(addr) => {
            let grpc_listener = TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::BindGrpc { addr, source })?;
            let grpc_addr = grpc_listener.local_addr().map_err(DaemonError::Serve)?;
            let receiver = crate::api::otlp_grpc::Receiver {
                ledger: crate::ledger::LedgerHandle::new(ledger_tx.clone(), view.clone()),
                defaults: crate::otlp::Defaults {
                    agent: config.otlp.default_agent.clone(),
                },
                token: token.clone(),
            };
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(crate::api::otlp_grpc::serve(
                grpc_listener,
                receiver,
                otlp_max,
                config.server.limits,
                grpc_tls.clone(),
                async {
                    let _ = stopped.await;
                },
            ));
            info!(addr = %grpc_addr, tls = grpc_tls.is_some(), "listening for OTLP/gRPC");
            Some((stop, task))
        }
    };
    let sampler = start_sampler(&config, &baselines, book, ledger_tx.clone())?;
    let fleet_admitter = match fleet_plan {
        Some(plan) => Some(start_fleet(
            plan,
            &config,
            &client_tls,
            fleet_link.clone(),
            &ledger_tx,
            health.clone(),
            metrics.clone(),
        )?),
        None => None,
    };
    info!(
        addr = %local,
        config = %config.source.as_ref().map_or("built-in defaults".into(), |p| p.display().to_string()),
        targets = config.targets.len(),
        budgets = config.budgets.len(),
        "listening"
    );

    let proxy = if config.proxy.enabled {
        let exec_agent = command.as_ref().map(|c| c.target.clone());
        let proxy = crate::proxy::Proxy::new(
            &config.proxy,
            &client_tls,
            crate::ledger::LedgerHandle::new(ledger_tx.clone(), view.clone()),
            metrics.clone(),
            exec_agent,
            fleet_admitter.map(|a| (a, config.fleet.on_fleet_unavailable)),
        )?;
        info!(
            upstreams = %config.proxy.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", "),
            "the LLM API proxy serves /proxy/NAME/…"
        );
        Some(Arc::new(proxy))
    } else {
        None
    };
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(4);
    let state = Arc::new(AppState {
        started: std::time::SystemTime::now(),
        reload: reload_tx,
        metrics,
        health: health.clone(),
        ledger: crate::ledger::LedgerHandle::new(ledger_tx.clone(), view.clone()),
        token: token.clone(),
        max_body_bytes: usize::try_from(config.server.max_body_bytes).unwrap_or(usize::MAX),
        targets: config.targets.iter().map(|t| t.name.clone()).collect(),
        instances: config.fleet.instance_names(config.server.listen),
        otlp: crate::otlp::Defaults {
            agent: config.otlp.default_agent.clone(),
        },
        otlp_max_body_bytes: otlp_max,
        decode_gate: decode_gate.clone(),
        allowed_hosts: config.server.allowed_hosts.clone(),
        reads: crate::reads::Reads::new(config.store.path.clone()),
        spend,
        proxy,
    });
    let app = api::router(state);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = config.server.limits;
    let server = tokio::spawn(crate::server::serve(
        listener,
        app,
        limits,
        server_tls,
        async {
            let _ = stop_rx.await;
        },
    ));

    let mut signals = Signals::install()?;
    let mut running = config;
    let status = match command {
        None => {
            loop {
                tokio::select! {
                    _ = signals.terminate.recv() => { info!("SIGTERM received, shutting down"); break; }
                    _ = signals.interrupt.recv() => { info!("SIGINT received, shutting down"); break; }
                    _ = signals.hangup.recv() => {
                        let _ = reload(&mut running, &token, &sampler, &enforcer, &ledger_tx, &listener_tls).await;
                    }
                    Some(reply) = reload_rx.recv() => {
                        let _ = reply.send(reload(&mut running, &token, &sampler, &enforcer, &ledger_tx, &listener_tls).await);
                    }
                }
            }
            0
        }
        Some(command) => {
            let env = if running.proxy.enabled {
                crate::proxy::agent_env(local, running.server.tls.is_some())
            } else {
                Vec::new()
            };
            let (child, mut ended) = spawn_command(&command, &env)?;
            let forward = |signal: rustix::process::Signal, name: &str| {
                info!(
                    signal = name,
                    pid = child.as_raw_pid(),
                    "forwarding signal to the command"
                );
                let _ = rustix::process::kill_process(child, signal);
            };
            let end = loop {
                tokio::select! {
                    end = &mut ended => break end.unwrap_or(ChildEnd::Exited(1)),
                    _ = signals.terminate.recv() => forward(rustix::process::Signal::TERM, "SIGTERM"),
                    _ = signals.interrupt.recv() => forward(rustix::process::Signal::INT, "SIGINT"),
                    _ = signals.hangup.recv() => forward(rustix::process::Signal::HUP, "SIGHUP"),
                    _ = signals.quit.recv() => forward(rustix::process::Signal::QUIT, "SIGQUIT"),
                    _ = signals.user1.recv() => forward(rustix::process::Signal::USR1, "SIGUSR1"),
                    _ = signals.user2.recv() => forward(rustix::process::Signal::USR2, "SIGUSR2"),
                    Some(reply) = reload_rx.recv() => {
                        let _ = reply.send(reload(&mut running, &token, &sampler, &enforcer, &ledger_tx, &listener_tls).await);
                    }
                }
            };
            // Count the command's last moments before anything stops.
            tokio::task::block_in_place(|| sampler.flush());
            match health.kill_cause() {
                Some(cause) => {
                    let grace = running.enforcement.grace + std::time::Duration::from_secs(1);
                    wait_for_descendants(grace).await;
                    eprintln!(
                        "costmeter: {cause}; the command was stopped with {} (exit status {EXIT_BUDGET_KILLED})",
                        running.enforcement.signal_name
                    );
                    EXIT_BUDGET_KILLED
                }
                None => match end {
                    ChildEnd::Exited(code) => u8::try_from(code & 0xff).unwrap_or(1),
                    ChildEnd::Signalled(signal) => u8::try_from((128 + signal) & 0xff).unwrap_or(1),
                },
            }
        }
    };

    let _ = stop_tx.send(());
    if let Some((stop, task)) = grpc {
        let _ = stop.send(());
        match task.await {
            Ok(Err(error)) => warn!(%error, "the OTLP/gRPC receiver ended with an error"),
            Err(error) => warn!(%error, "the OTLP/gRPC receiver panicked"),
            Ok(Ok(())) => {}
        }
    }
    let served = server.await;
    drop(sampler);
    drop(enforcer);
    *report_slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    drop(ledger_tx);
    // The ledger drains what is queued, commits it, and stops once the last sender is gone.
    let _ = tokio::task::spawn_blocking(move || ledger_thread.join()).await;
    // The ledger held the span queue's only sender: what it queued last is exported now.
    if let Some(exporter) = exporter {
        exporter.drain().await;
    }
    match served {
        Ok(Ok(())) => Ok(status),
        Ok(Err(error)) => Err(DaemonError::Serve(error)),
        Err(join) => Err(DaemonError::Serve(std::io::Error::other(join))),
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// The signals the daemon listens for.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    user1: tokio::signal::unix::Signal,
    user2: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        let install = |kind| signal(kind).map_err(DaemonError::Signal);
        Ok(Signals {
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
            hangup: install(SignalKind::hangup())?,
            quit: install(SignalKind::quit())?,
            user1: install(SignalKind::user_defined1())?,
            user2: install(SignalKind::user_defined2())?,
        })
    }
}

/// Starts the command and a reaper thread for it and every orphan reparented to costmeter.
fn spawn_command(
    command: &ExecCommand,
    env: &[(&'static str, String)],
) -> Result<
    (
        rustix::process::Pid,
        tokio::sync::oneshot::Receiver<ChildEnd>,
    ),
    DaemonError,
> {
    let (program, args) = command
        .argv
        .split_first()
        .ok_or_else(|| DaemonError::Exec("no command given after --".into()))?;
    let mut child = std::process::Command::new(program);
    child.args(args);
    // The agents' base-URL variables, pointing at the proxy, unless the caller set them.
    for (name, value) in env {
        if std::env::var_os(name).is_none() {
            child.env(name, value);
        }
    }
    let child = child.spawn().map_err(|e| {
        DaemonError::Exec(format!("cannot start '{}': {e}", program.to_string_lossy()))
    })?;
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0))
        .ok_or_else(|| DaemonError::Exec("the command has no pid".into()))?;
    // The reaper below waits for it; the std handle must not.
    drop(child);
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("costmeter-reaper".into())
        .spawn(move || {
            let mut done = Some(done);
            // Reap every child: the command, and orphans reparented to this subreaper, whose
            // CPU then lands in costmeter's cutime/cstime where the exec target counts it.
            while let Ok(Some((reaped, status))) =
                rustix::process::wait(rustix::process::WaitOptions::empty())
            {
                if reaped == pid
                    && let Some(done) = done.take()
                {
                    let end = match (status.exit_status(), status.terminating_signal()) {
                        (Some(code), _) => ChildEnd::Exited(code),
                        (None, Some(signal)) => ChildEnd::Signalled(signal),
                        (None, None) => ChildEnd::Exited(1),
                    };
                    let _ = done.send(end);
                }
            }
        })
        .map_err(|e| DaemonError::Exec(format!("cannot start the reaper thread: {e}")))?;
    Ok((pid, ended))
}

/// After a budget kill, gives the enforcer its grace to finish with the command's descendants.
async fn wait_for_descendants(limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let own = crate::enforce::own_pid();
    while tokio::time::Instant::now() < deadline {
        let left = tokio::task::spawn_blocking(move || {
            crate::sampler::proc::ProcTable::scan()
                .tree(&[own], true)
                .len()
                > 1
        })
        .await
        .unwrap_or(false);
        if !left {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn read_token(config: &Config) -> Result<Option<String>, DaemonError> {
    let Some(path) = &config.server.token_file else {
        return Ok(None);
    };
    crate::config::read_token_file(path)
        .map(Some)
        .map_err(|reason| DaemonError::Token {
            path: path.clone(),
            reason,
        })
}

fn start_sampler(
    config: &Config,
    baselines: &sampler::StoredBaselines,
    book: IdentityBook,
    ledger: LedgerSender,
) -> Result<SamplerHandle, DaemonError> {
    sampler::spawn(
        Sampler::resume(config.targets.clone(), baselines, book),
        move |reading| {
            // The ledger outlives the sampler; a send error means shutdown is under way.
            let _ = ledger.blocking_send(LedgerInput::Reading(reading));
        },
    )
    .map_err(DaemonError::Sampler)
}

/// Re-reads the config file. A bad file keeps the running config and says why.
async fn reload(
    running: &mut Config,
    token: &Option<String>,
    sampler: &SamplerHandle,
    enforcer: &std::sync::mpsc::Sender<EnforcerInput>,
    ledger: &LedgerSender,
    listener_tls: &[crate::tls::ServerTls],
) -> Result<String, String> {
    let Some(path) = running.source.clone() else {
        let message = "costmeter runs on built-in defaults; there is no file to reload".to_string();
        warn!("{message}");
        return Err(message);
    };
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
    let mut new = match loaded {
        Ok(Ok(new)) => new,
        Ok(Err(problem)) => {
            error!(error = %problem, "config reload failed; keeping the running config");
            return Err(format!("{problem}; the running config stays"));
        }
        Err(join) => {
            error!(error = %join, "config reload failed; keeping the running config");
            return Err(format!("{join}; the running config stays"));
        }
    };
    // The listeners' certificate files are read again (renewed certificates take effect
    // without a restart); the file was checked whole above, so this only fails on a race.
    for tls in listener_tls {
        if let Err(problem) = tls.reload() {
            warn!(error = %problem, "a listener's certificate could not be re-read; it keeps the running one");
        }
    }
    if new.server.tls != running.server.tls || new.otlp.grpc_tls != running.otlp.grpc_tls {
        warn!(
            "TLS certificate paths changed; new paths take effect after a restart (the files at the old paths were re-read)"
        );
    }
    if new.server != running.server {
        warn!(
            "[server] changed (listen, limits, allowed_hosts or token_file); it takes effect after a restart"
        );
    }
    match read_token(&new) {
        Ok(now) if now != *token => warn!(
            "the bearer token changed (server.token_file); the running daemon keeps requiring the old one until it restarts"
        ),
        Ok(_) => {}
        Err(problem) => {
            warn!(error = %problem, "the new server.token_file cannot be read; the running daemon keeps its token")
        }
    }
    if new.metrics != running.metrics {
        warn!("[metrics] changed; metric names and caps take effect after a restart");
    }
    if new.budgets != running.budgets
        || new.enforcement != running.enforcement
        || new.pricing != running.pricing
        || new.store != running.store
    {
        warn!(
            "[store], [pricing], [budgets], [[budget]] and [enforcement] changes take effect after a restart"
        );
    }
    // The command `exec` runs stays a target whatever the file says.
    if let Some(exec) = running
        .targets
        .iter()
        .find(|t| matches!(t.selector, Selector::ExecChildren))
    {
        new.targets
            .retain(|t| t.name != exec.name && !matches!(t.selector, Selector::OwnProcess));
        new.targets.push(exec.clone());
    }
    let kept: HashSet<&str> = new.targets.iter().map(|t| t.name.as_str()).collect();
    for gone in running
        .targets
        .iter()
        .filter(|t| !kept.contains(t.name.as_str()))
    {
        let _ = ledger
            .send(LedgerInput::TargetRemoved(gone.name.clone()))
            .await;
    }
    sampler.reconfigure(new.targets.clone());
    let _ = enforcer.send(EnforcerInput::Targets(new.targets.clone()));
    let detail = format!(
        "reloaded {}: {} target{}",
        new.source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        new.targets.len(),
        if new.targets.len() == 1 { "" } else { "s" }
    );
    info!(config = %detail, "config reloaded");
    running.targets = new.targets;
    Ok(detail)
}

/// Starts the fleet's pusher and listener; the admitter for the proxy. Updates reach the
/// ledger by `try_send` through a weak sender: the fleet never keeps the ledger alive, and a
/// full inbox drops a refresh the next round repeats.
fn start_fleet(
    plan: crate::fleet::FleetPlan,
    config: &Config,
    tls: &crate::tls::ClientTls,
    link: Arc<crate::fleet::pusher::Link>,
    ledger: &crate::ledger::LedgerSender,
    health: Arc<Health>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<crate::fleet::admit::Admitter, DaemonError> {
    let mut plan = plan;
    plan.store = crate::store::Store::open_reader(&config.store.path)
        .and_then(|reader| reader.store_id())
        .map_err(crate::fleet::FleetError::from)?;
    let client = crate::fleet::client(&plan.redis, tls)?;
    let weak = ledger.downgrade();
    // The fleet's own threads wait for room in the inbox: a total dropped there could leave
    // the ledger with another store's newer total but not its own part of it (counted twice
    // until the next push). Admission's answers (on the runtime) never wait; each carries this
    // store's part, so dropping one loses nothing.
    let sink: Arc<crate::fleet::UpdateSink> = Arc::new(Box::new(move |update| {
        if let Some(sender) = weak.upgrade() {
            let input = crate::ledger::LedgerInput::Fleet(update);
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = sender.try_send(input);
            } else {
                let _ = sender.blocking_send(input);
            }
        }
    }));
    info!(
        redis = %crate::config::redact(&plan.redis.url),
        namespace = %plan.keys.namespace,
        budgets = %plan.budgets.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", "),
        "fleet budgets shared through Redis"
    );
    let admitter = crate::fleet::admit::Admitter::new(
        plan.clone(),
        client.clone(),
        link.clone(),
        sink.clone(),
    );
    crate::fleet::pusher::Pusher::new(
        plan,
        client,
        &config.store.path,
        link,
        sink,
        health,
        metrics,
    )
    .spawn()
    .map_err(DaemonError::FleetThread)?;
    Ok(admitter)
}

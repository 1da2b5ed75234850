//! `costmeter run`: wires sources, ledger and HTTP together and handles signals.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::ledger::{self, LedgerInput, LedgerSender};
use crate::metrics::Metrics;
use crate::sampler::{self, Sampler, SamplerHandle};

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
    #[error("cannot start the sampler thread: {0}")]
    Sampler(#[source] std::io::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Readiness facts, set by the parts that know them.
#[derive(Debug, Default)]
pub struct Health {
    sampled: AtomicBool,
}

impl Health {
    pub fn mark_sampled(&self) {
        self.sampled.store(true, Ordering::Relaxed);
    }

    /// Each readiness check: name, passing, detail.
    pub fn checks(&self) -> Vec<(&'static str, bool, &'static str)> {
        let sampled = self.sampled.load(Ordering::Relaxed);
        vec![
            ("config", true, "configuration loaded"),
            (
                "sampler",
                sampled,
                if sampled {
                    "first sample taken"
                } else {
                    "waiting for the first sample"
                },
            ),
        ]
    }
}

/// Runs the daemon until SIGTERM or SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let metrics = Arc::new(Metrics::new(
        &config.metrics.namespace,
        config.metrics.max_label_values,
    ));
    let health = Arc::new(Health::default());
    let (ledger_tx, ledger_task) = ledger::spawn(metrics.clone(), health.clone());

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(DaemonError::Serve)?;

    let sampler = start_sampler(&config, ledger_tx.clone())?;
    info!(
        addr = %local,
        config = %config.source.as_ref().map_or("built-in defaults".into(), |p| p.display().to_string()),
        targets = config.targets.len(),
        "listening"
    );

    let state = Arc::new(AppState { metrics, health });
    let app = api::router(state);

    let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });

    let mut running = config;
    loop {
        tokio::select! {
            _ = terminate.recv() => { info!("SIGTERM received, shutting down"); break; }
            _ = interrupt.recv() => { info!("SIGINT received, shutting down"); break; }
            _ = hangup.recv() => reload(&mut running, &sampler, &ledger_tx).await,
        }
    }
    let _ = stop_tx.send(());
    let served = server.await;
    drop(sampler);
    drop(ledger_tx);
    let _ = ledger_task.await;
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(DaemonError::Serve(error)),
        Err(join) => Err(DaemonError::Serve(std::io::Error::other(join))),
    }
}

fn start_sampler(config: &Config, ledger: LedgerSender) -> Result<SamplerHandle, DaemonError> {
    sampler::spawn(Sampler::new(config.targets.clone()), move |reading| {
        // The ledger outlives the sampler; a send error means shutdown is under way.
        let _ = ledger.blocking_send(LedgerInput::Reading(reading));
    })
    .map_err(DaemonError::Sampler)
}

/// Re-reads the config file. A bad file keeps the running config and says why.
async fn reload(running: &mut Config, sampler: &SamplerHandle, ledger: &LedgerSender) {
    let Some(path) = running.source.clone() else {
        warn!("SIGHUP received but costmeter runs on built-in defaults; nothing to reload");
        return;
    };
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
    let new = match loaded {
        Ok(Ok(new)) => new,
        Ok(Err(problem)) => {
            error!(error = %problem, "config reload failed; keeping the running config");
            return;
        }
        Err(join) => {
            error!(error = %join, "config reload failed; keeping the running config");
            return;
        }
    };
    if new.server != running.server {
        warn!("server.listen changed; the new address takes effect after a restart");
    }
    if new.metrics != running.metrics {
        warn!("[metrics] changed; metric names and caps take effect after a restart");
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
    info!(
        config = %new.source.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        targets = new.targets.len(),
        "config reloaded"
    );
    *running = Config {
        server: running.server.clone(),
        metrics: running.metrics.clone(),
        ..new
    };
}

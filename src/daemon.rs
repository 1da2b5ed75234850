//! `costmeter run`: wires sources, ledger and HTTP together and handles signals.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::api::{self, AppState};
use crate::config::Config;
use crate::ledger::{Ledger, LedgerInput, LedgerSender};
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
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("cannot start the ledger thread: {0}")]
    LedgerThread(#[source] std::io::Error),
    #[error("cannot read server.token_file '{path}': {reason}")]
    Token {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// Readiness facts, set by the parts that know them.
#[derive(Debug, Default)]
pub struct Health {
    sampled: AtomicBool,
    /// The last store write's failure, if it failed.
    store_failure: Mutex<Option<String>>,
}

impl Health {
    pub fn mark_sampled(&self) {
        self.sampled.store(true, Ordering::Relaxed);
    }

    pub fn set_store(&self, outcome: Result<(), String>) {
        let mut failure = self
            .store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *failure = outcome.err();
    }

    /// Each readiness check: name, passing, detail.
    pub fn checks(&self) -> Vec<(&'static str, bool, String)> {
        let sampled = self.sampled.load(Ordering::Relaxed);
        let store = self
            .store_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let sampler_detail = if sampled {
            "first sample taken"
        } else {
            "waiting for the first sample"
        };
        vec![
            ("config", true, "configuration loaded".to_string()),
            ("sampler", sampled, sampler_detail.to_string()),
            match store {
                None => ("store", true, "last write succeeded".to_string()),
                Some(failure) => ("store", false, failure),
            },
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
    let token = read_token(&config)?;
    let (ledger, baselines) = Ledger::open(&config, metrics.clone(), health.clone())?;
    let (ledger_tx, ledger_thread) = ledger.spawn().map_err(DaemonError::LedgerThread)?;

    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.server.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(DaemonError::Serve)?;

    let sampler = start_sampler(&config, &baselines, ledger_tx.clone())?;
    info!(
        addr = %local,
        config = %config.source.as_ref().map_or("built-in defaults".into(), |p| p.display().to_string()),
        targets = config.targets.len(),
        "listening"
    );

    let state = Arc::new(AppState {
        metrics,
        health,
        ledger: ledger_tx.clone(),
        token,
        max_body_bytes: usize::try_from(config.server.max_body_bytes).unwrap_or(usize::MAX),
    });
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
    // The ledger drains what is queued, commits it, and stops once the last sender is gone.
    let _ = tokio::task::spawn_blocking(move || ledger_thread.join()).await;
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(DaemonError::Serve(error)),
        Err(join) => Err(DaemonError::Serve(std::io::Error::other(join))),
    }
}

fn read_token(config: &Config) -> Result<Option<String>, DaemonError> {
    let Some(path) = &config.server.token_file else {
        return Ok(None);
    };
    let token = std::fs::read_to_string(path).map_err(|error| DaemonError::Token {
        path: path.clone(),
        reason: error.to_string(),
    })?;
    let token = token.trim().to_string();
    if token.len() < 16 {
        return Err(DaemonError::Token {
            path: path.clone(),
            reason: "the token must be at least 16 characters".into(),
        });
    }
    Ok(Some(token))
}

fn start_sampler(
    config: &Config,
    baselines: &sampler::StoredBaselines,
    ledger: LedgerSender,
) -> Result<SamplerHandle, DaemonError> {
    sampler::spawn(
        Sampler::resume(config.targets.clone(), baselines),
        move |reading| {
            // The ledger outlives the sampler; a send error means shutdown is under way.
            let _ = ledger.blocking_send(LedgerInput::Reading(reading));
        },
    )
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

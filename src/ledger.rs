//! The ledger: the one owner of running totals. Every source sends it what it saw; it alone
//! moves the metrics, so there is one place to read when a number looks wrong.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::daemon::Health;
use crate::metrics::Metrics;
use crate::sampler::TargetReading;

/// How many inputs may wait before senders are slowed down.
pub const LEDGER_QUEUE: usize = 4096;

/// What sources send to the ledger.
#[derive(Debug)]
pub enum LedgerInput {
    Reading(TargetReading),
    /// A target was removed from the config: its gauges go.
    TargetRemoved(String),
}

/// Sending side of the ledger, cloned into every source.
pub type LedgerSender = mpsc::Sender<LedgerInput>;

/// Starts the ledger task; it runs until every sender is dropped.
pub fn spawn(
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> (LedgerSender, tokio::task::JoinHandle<()>) {
    let (sender, mut inbox) = mpsc::channel(LEDGER_QUEUE);
    let task = tokio::spawn(async move {
        while let Some(input) = inbox.recv().await {
            match input {
                LedgerInput::Reading(reading) => {
                    metrics.record_target(&reading);
                    health.mark_sampled();
                }
                LedgerInput::TargetRemoved(name) => metrics.forget_target(&name),
            }
        }
    });
    (sender, task)
}

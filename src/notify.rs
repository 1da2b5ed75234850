//! The budget webhook: every transition is POSTed as JSON to `[enforcement] webhook`, on a
//! thread of its own with retries and backoff, so a slow or absent receiver never delays
//! ingestion. When the queue is full a notification is dropped and logged, never waited for.

use std::sync::mpsc;
use std::time::Duration;

use crate::wire::BudgetNotice;
use backon::{BlockingRetryable, ExponentialBuilder};
use tracing::{debug, warn};

/// Notifications waiting to be sent before new ones are dropped.
const QUEUE: usize = 1024;

#[derive(Clone)]
pub struct Webhook {
    queue: mpsc::SyncSender<BudgetNotice>,
}

impl Webhook {
    /// Starts the sender thread for `url`, speaking https with `tls`'s roots and client
    /// certificate; each delivery's outcome goes to `health` (a failure is a problem `doctor`
    /// shows, with the URL and why).
    pub fn spawn(
        url: String,
        tls: &crate::tls::ClientTls,
        health: std::sync::Arc<crate::health::Health>,
    ) -> std::io::Result<Webhook> {
        let (queue, inbox) = mpsc::sync_channel::<BudgetNotice>(QUEUE);
        let http = tls.http_agent(Duration::from_secs(5));
        std::thread::Builder::new()
            .name("costmeter-webhook".into())
            .spawn(move || {
                let backoff = ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(5);
                while let Ok(payload) = inbox.recv() {
                    let body = serde_json::to_string(&payload).unwrap_or_default();
                    let send = || {
                        let answer = http
                            .post(&url)
                            .header("Content-Type", "application/json")
                            .send(body.as_str())
                            .map_err(|e| e.to_string())?;
                        match answer.status().as_u16() {
                            200..=299 => Ok(()),
                            status => Err(format!("answered {status}")),
                        }
                    };
                    let outcome = send.retry(backoff).call();
                    let now = jiff::Timestamp::now().as_millisecond();
                    match &outcome {
                        Ok(()) => debug!(url = %url, "webhook delivered"),
                        Err(error) => warn!(url = %url, %error, "webhook not delivered after retries; dropped"),
                    }
                    health.record_delivery(
                        "webhook",
                        outcome.map_err(|error| format!("{url}: {error}")),
                        now,
                    );
                }
            })?;
        Ok(Webhook { queue })
    }

    /// Queues a notification; never blocks.
    pub fn notify(&self, payload: BudgetNotice) {
        if self.queue.try_send(payload).is_err() {
            warn!("webhook queue full or closed; notification dropped");
        }
    }
}

//! Reads served beside the ledger, never through it: runs, tasks and reports come from
//! read-only connections of their own (SQLite WAL lets them read the last commit while the
//! ledger writes), on the blocking pool, at most [`READERS`] at a time. So a page polled
//! non-stop or a report over a busy week neither waits for the ledger nor makes an event's
//! acknowledgement wait.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::store::{Store, StoreError};

/// Reads at once; more wait their turn (a flood of page loads queues here, not in the ledger).
pub const READERS: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the read was cut short: {0}")]
    Aborted(String),
}

pub struct Reads {
    path: PathBuf,
    idle: Mutex<Vec<Store>>,
    permits: Semaphore,
}

impl Reads {
    pub fn new(path: PathBuf) -> Arc<Reads> {
        Arc::new(Reads {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(READERS),
        })
    }

    /// Runs `work` on a reader connection off the async workers.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ReadError::Aborted(e.to_string()))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let idle = this
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let store = match idle {
                Some(store) => store,
                None => Store::open_reader(&this.path)?,
            };
            let result = work(&store);
            this.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(store);
            Ok(result?)
        })
        .await
        .map_err(|e| ReadError::Aborted(e.to_string()))?
    }
}

//! Reads served beside the ledger, never through it: runs, tasks, reports, the status and the
//! page are computed on [`READERS`] threads of their own, each with a read-only connection
//! (SQLite WAL lets it read the last commit while the ledger writes). The threads run at a
//! lower scheduling priority (nice +[`NICE`]) than the ledger and the request workers: when
//! the machine is busy — a page polled non-stop on two cores — CPU goes to acknowledging
//! events and judging budgets first, and reads take what is left.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Semaphore, oneshot};

use crate::store::{Store, StoreError};

/// Reader threads.
pub const READERS: usize = 2;
/// Reads queued or running at once; more wait their turn on the request's task (a flood of
/// page loads queues here, not in the ledger).
const QUEUED: usize = 64;
/// How much nicer than the rest of costmeter the reader threads are.
pub const NICE: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the read was cut short: {0}")]
    Aborted(String),
}

type Job = Box<dyn FnOnce(Option<&Store>) + Send>;

pub struct Reads {
    jobs: mpsc::Sender<Job>,
    permits: Semaphore,
}

/// Lowers this thread's priority: on Linux, nice values are per thread.
fn be_nice() {
    let tid = rustix::thread::gettid();
    let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    if let Err(error) = rustix::process::setpriority_process(Some(tid), current + NICE) {
        tracing::debug!(%error, "reader thread keeps the default priority");
    }
}

/// One reader thread: opens its connection on first use (and again after a failure).
fn serve(path: &std::path::Path, jobs: &Mutex<mpsc::Receiver<Job>>) {
    be_nice();
    let mut store: Option<Store> = None;
    loop {
        let job = match jobs.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        if store.is_none() {
            store = Store::open_reader(path).ok();
        }
        job(store.as_ref());
    }
}

impl Reads {
    pub fn new(path: PathBuf) -> Arc<Reads> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let path = Arc::new(path);
        for index in 0..READERS {
            let receiver = receiver.clone();
            let path = path.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("costmeter-read-{index}"))
                .spawn(move || serve(&path, &receiver));
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start a reader thread; reads run on fewer");
            }
        }
        Arc::new(Reads {
            jobs: sender,
            permits: Semaphore::new(QUEUED),
        })
    }

    /// Runs `work` on a reader thread with its connection.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ReadError> {
        self.compute(move |store| match store {
            Some(store) => work(store).map_err(ReadError::from),
            None => Err(ReadError::Aborted(
                "no reader connection to the store could be opened".into(),
            )),
        })
        .await?
    }

    /// Runs `work`, which needs no connection (the status, the page), on a reader thread, so
    /// it takes its CPU at the readers' priority.
    pub async fn compute<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(Option<&Store>) -> T + Send + 'static,
    ) -> Result<T, ReadError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ReadError::Aborted(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = reply.send(work(store));
        });
        self.jobs
            .send(job)
            .map_err(|_| ReadError::Aborted("the reader threads stopped".into()))?;
        answer
            .await
            .map_err(|_| ReadError::Aborted("a reader thread stopped mid-read".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_run_on_nicer_threads_of_their_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("r.db");
        drop(Store::open(&path).expect("a store"));
        let reads = Reads::new(path);
        let (name, nice) = reads
            .compute(|_| {
                let name = std::thread::current().name().map(str::to_string);
                let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid()))
                    .expect("own priority");
                (name, nice)
            })
            .await
            .expect("computed");
        assert!(name.is_some_and(|n| n.starts_with("costmeter-read-")));
        assert!(nice >= NICE, "nice {nice}");
        let version = reads
            .run(|store| store.schema_version())
            .await
            .expect("read");
        assert!(version > 0);
    }
}

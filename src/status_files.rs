//! `[status_file]`: each run's task entries with their cost records, written by a thread of
//! their own after the ledger answered the batch that changed them — never between commit and
//! reply. Runs that change together are written once: the writer collects the runs named
//! within [`DEBOUNCE`] of the first, then reads each from a reader connection beside the
//! ledger and writes it (through `files::write_atomic`, never through a link).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::store::Store;

/// How long the writer gathers runs after the first before writing them.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Runs waiting to be written before the ledger keeps the rest for its next batch.
const QUEUE: usize = 1024;

/// The run id that stands for tasks of no run, in file names.
pub const NO_RUN: &str = "none";

/// The ledger's side: names the runs whose file is out of date.
pub struct StatusFiles {
    sender: Option<SyncSender<String>>,
    thread: Option<JoinHandle<()>>,
}

/// The file of `run` under `template` (`{g}` is the run id, made safe for a file name).
pub fn path_of(template: &Path, run: &str) -> PathBuf {
    let safe: String = run
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    PathBuf::from(template.to_string_lossy().replace("{g}", &safe))
}

impl StatusFiles {
    pub fn spawn(template: PathBuf, store: PathBuf) -> std::io::Result<StatusFiles> {
        let (sender, inbox) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("costmeter-status-files".into())
            .spawn(move || write_loop(&template, &store, &inbox))?;
        Ok(StatusFiles {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Asks for `run`'s file to be rewritten; false when the writer is busy (ask again later).
    pub fn mark(&self, run: &str) -> bool {
        let Some(sender) = &self.sender else {
            return false;
        };
        match sender.try_send(run.to_string()) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => true,
            Err(TrySendError::Full(_)) => false,
        }
    }
}

impl Drop for StatusFiles {
    /// Writes what is pending, then stops.
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(template: &Path, store_path: &Path, inbox: &Receiver<String>) {
    let mut reader: Option<Store> = None;
    while let Ok(first) = inbox.recv() {
        let mut runs = BTreeSet::from([first]);
        let until = Instant::now() + DEBOUNCE;
        let mut closed = false;
        loop {
            match inbox.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(run) => {
                    runs.insert(run);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if reader.is_none() {
            match Store::open_reader(store_path) {
                Ok(store) => reader = Some(store),
                Err(failure) => warn!(error = %failure, "cannot read the store for status files"),
            }
        }
        if let Some(store) = &reader {
            for run in &runs {
                write_one(template, store, run);
            }
        }
        if closed {
            return;
        }
    }
}

fn write_one(template: &Path, store: &Store, run: &str) {
    let path = path_of(template, run);
    let tasks = match store.tasks_of((run != NO_RUN).then_some(run)) {
        Ok(tasks) => tasks,
        Err(failure) => {
            warn!(error = %failure, run, "cannot read the run for its status file");
            return;
        }
    };
    let text = crate::runs::status_file_text(run, &tasks);
    match crate::files::write_atomic(&path, text.as_bytes()) {
        Ok(()) => debug!(run, tasks = tasks.len(), "status file written"),
        Err(error) => warn!(path = %path.display(), %error, "cannot write the status file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_become_safe_file_names() {
        let template = Path::new("/var/status/exec_status_{g}.txt");
        assert_eq!(
            path_of(template, "run-1.a_b"),
            PathBuf::from("/var/status/exec_status_run-1.a_b.txt")
        );
        assert_eq!(
            path_of(template, "../../etc/passwd"),
            PathBuf::from("/var/status/exec_status_.._.._etc_passwd.txt")
        );
    }
}

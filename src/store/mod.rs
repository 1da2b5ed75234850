//! The durable ledger: SQLite in WAL mode, one writer (the ledger task).
//!
//! Every acknowledged event is committed before its 2xx; a batch of requests shares one
//! transaction (group commit). The sampler's resource deltas are stored with the accounting
//! baseline they were computed against, in the same transaction, so a restarted sidecar
//! neither loses nor re-counts what the target used. Old rows compact into daily rollups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::ingest::{Event, EventBody};
use crate::otlp::mapping::Family;
use crate::otlp::streams::{Claim, Held, OtlpState, StateRow, StreamState};
use crate::pricing::Cost;

/// Marks a database as costmeter's (`PRAGMA application_id`), so a foreign file is refused.
const APPLICATION_ID: i32 = 0x436f_4d74; // "CoMt"

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: events, runs, tasks, resource history, rollups.
    "CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        event_id TEXT UNIQUE,
        ts_ms INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        source TEXT NOT NULL,
        type TEXT NOT NULL,
        agent TEXT, model TEXT, provider TEXT, run_id TEXT, task_id TEXT, task_type TEXT,
        input_tokens INTEGER, cache_read_tokens INTEGER, cache_write_tokens INTEGER,
        output_tokens INTEGER, reasoning_tokens INTEGER,
        cost_usd REAL, cost_confidence TEXT,
        result TEXT, failure_class TEXT, error_summary TEXT,
        seconds REAL, bytes INTEGER, lock TEXT, path_hash TEXT,
        trace_id TEXT, span_id TEXT
    );
    CREATE INDEX events_ts ON events(ts_ms);
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, agent TEXT, name TEXT, started_ms INTEGER, ended_ms INTEGER,
        result TEXT, failure_class TEXT, error_summary TEXT, trace_id TEXT, span_id TEXT
    );
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY, run_id TEXT, task_type TEXT, agent TEXT,
        started_ms INTEGER, ended_ms INTEGER, result TEXT, failure_class TEXT,
        error_summary TEXT, trace_id TEXT, span_id TEXT
    );
    CREATE TABLE resource_samples (
        ts_ms INTEGER NOT NULL, target TEXT NOT NULL, cpu_seconds REAL NOT NULL,
        read_bytes INTEGER NOT NULL, written_bytes INTEGER NOT NULL,
        rss_bytes INTEGER NOT NULL, peak_rss_bytes INTEGER NOT NULL
    );
    CREATE INDEX resource_samples_ts ON resource_samples(ts_ms);
    CREATE TABLE target_baselines (
        target TEXT PRIMARY KEY, selector TEXT NOT NULL, baseline TEXT NOT NULL
    );
    CREATE TABLE usage_rollups (
        day TEXT NOT NULL, agent TEXT NOT NULL, model TEXT NOT NULL,
        input_tokens INTEGER NOT NULL, cache_read_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL, events INTEGER NOT NULL, unknown_model_events INTEGER NOT NULL,
        PRIMARY KEY (day, agent, model)
    );
    CREATE TABLE resource_rollups (
        day TEXT NOT NULL, target TEXT NOT NULL, cpu_seconds REAL NOT NULL,
        read_bytes INTEGER NOT NULL, written_bytes INTEGER NOT NULL,
        peak_rss_bytes INTEGER NOT NULL,
        PRIMARY KEY (day, target)
    );",
    // 2: budget states (so a transition fires once across restarts) and enforcement actions.
    "CREATE TABLE budget_states (
        name TEXT PRIMARY KEY, window_start_ms INTEGER NOT NULL, state TEXT NOT NULL
    );
    CREATE TABLE enforcement_actions (
        ts_ms INTEGER NOT NULL, target TEXT NOT NULL, reason TEXT NOT NULL, signal TEXT NOT NULL,
        signalled INTEGER NOT NULL, killed INTEGER NOT NULL, refused TEXT NOT NULL, dry_run INTEGER NOT NULL
    );",
    // 3: the OTLP receiver's memory: the last point of each cumulative stream, and which
    // signal family meters each agent instance.
    "CREATE TABLE otlp_streams (
        stream TEXT PRIMARY KEY, start_ns INTEGER NOT NULL, time_ns INTEGER NOT NULL,
        value REAL NOT NULL, seen_ms INTEGER NOT NULL
    );
    CREATE TABLE otlp_claims (
        owner TEXT PRIMARY KEY, family TEXT NOT NULL, last_ms INTEGER NOT NULL
    );",
    // 4: the report's costliest tasks read only usage tagged with a task.
    "CREATE INDEX events_task_usage ON events(ts_ms, task_id)
        WHERE type = 'llm_usage' AND task_id IS NOT NULL;",
    // 5: provider call ids (response and request ids) already counted, from any source: one
    // count per call when the proxy and the agent's telemetry both report it.
    "CREATE TABLE calls (call_id TEXT PRIMARY KEY, ts_ms INTEGER NOT NULL) WITHOUT ROWID;
    CREATE INDEX calls_ts ON calls(ts_ms);",
    // 6: the store's own id, under which Redis keeps how far its usage was pushed to the fleet
    // (a new store, even at the same path, starts again from nothing).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));",
    // 7: one count per call across signals: how far the family metering an owner has counted
    // (a richer family taking over counts after it), and usage held for a moment for a richer
    // twin (`held` is the usage as JSON, tokens and ids only).
    "ALTER TABLE otlp_claims ADD COLUMN covered_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE otlp_claims ADD COLUMN inherited_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE otlp_claims ADD COLUMN held_until_ms INTEGER;
    CREATE TABLE otlp_held (key TEXT PRIMARY KEY, held TEXT NOT NULL) WITHOUT ROWID;",
];

/// Usage of one agent and model in one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlySpend {
    pub hour_ms: i64,
    pub agent: String,
    pub model: String,
    /// Input plus output tokens.
    pub tokens: u64,
    /// Tokens by kind: uncached input, cache reads, cache writes, output.
    pub kinds: [u64; 4],
    pub usd: f64,
    /// Usage events, and how their USD was obtained (`pricing::Confidence`'s label).
    pub events: u64,
    pub confidence: String,
}

/// One resource sample as the page draws it: what the target used since the previous sample
/// (CPU seconds, disk bytes read and written) and its RSS then.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcePoint {
    pub ts_ms: i64,
    pub target: String,
    pub cpu_seconds: f64,
    pub disk_bytes: f64,
    pub rss_bytes: f64,
}

/// One stored usage amount, replayed into budgets at start.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCharge {
    pub ts_ms: i64,
    /// The agent for usage, the target for resources.
    pub owner: String,
    /// USD, or CPU seconds.
    pub first: f64,
    /// Tokens, or disk bytes.
    pub second: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store '{path}': {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "'{path}' is not a costmeter store (application_id {found:#x}); point [store] path at a new file or move this one away — it was left untouched"
    )]
    Foreign { path: PathBuf, found: i32 },
    #[error(
        "'{path}' is not a readable SQLite database ({detail}): corrupt, or not a database at all. costmeter left it untouched; move it away (keep it if its history matters) to start a fresh store there, or point [store] path at a new file"
    )]
    Unreadable { path: PathBuf, detail: String },
    #[error(
        "the store '{path}' has schema version {found}, newer than this costmeter knows ({known}); upgrade costmeter"
    )]
    TooNew {
        path: PathBuf,
        found: usize,
        known: usize,
    },
    #[error(
        "the store '{path}' is an empty file (0 bytes), not a store: its history and lifetime budgets would silently start from nothing. Move it away or delete it to start a fresh store, or point [store] path at the right file"
    )]
    Empty { path: PathBuf },
    #[error(
        "the store '{path}' is in use by another costmeter ({lock} is locked); stop it, or point [store] path at another file"
    )]
    InUse { path: PathBuf, lock: PathBuf },
    #[error("cannot lock the store '{path}': {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store write failed: {0}")]
    Write(#[source] rusqlite::Error),
    #[error("store read failed: {0}")]
    Read(#[source] rusqlite::Error),
}

/// One priced event ready to be written.
#[derive(Debug, Clone)]
pub struct PricedEvent {
    pub event: Event,
    pub source: &'static str,
    /// Present for `llm_usage`.
    pub cost: Option<Cost>,
}

/// A sampler reading's deltas, with the baseline to resume from after a restart.
#[derive(Debug, Clone)]
pub struct ResourceRow {
    pub ts_ms: i64,
    pub target: String,
    pub cpu_seconds: f64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// (selector description, serialized baseline)
    pub baseline: Option<(String, String)>,
}

/// Totals rebuilt from the store at start.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Totals {
    pub usage: Vec<UsageTotal>,
    pub unknown_models: Vec<(String, u64, u64)>,
    pub tasks: Vec<(String, String, u64)>,
    pub task_durations: Vec<(String, f64)>,
    pub lock_waits: Vec<f64>,
    pub events: Vec<(String, String, u64)>,
    pub resources: Vec<ResourceTotal>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct UsageTotal {
    pub agent: String,
    pub model: String,
    pub uncached_input_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResourceTotal {
    pub target: String,
    pub cpu_seconds: f64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub peak_rss_bytes: u64,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// The writer's lock on `<path>.lock`, held while the store is open; none for readers.
    _lock: Option<std::os::fd::OwnedFd>,
}

/// Takes the one-writer lock beside the store: a second daemon on the same file fails at start.
fn lock_beside(path: &Path) -> Result<std::os::fd::OwnedFd, StoreError> {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let failed = |source: std::io::Error| StoreError::Lock {
        path: path.to_path_buf(),
        source,
    };
    let fd = rustix::fs::open(
        &lock,
        rustix::fs::OFlags::RDWR
            | rustix::fs::OFlags::CREATE
            | rustix::fs::OFlags::NOFOLLOW
            | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| failed(e.into()))?;
    match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(fd),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::InUse {
            path: path.to_path_buf(),
            lock,
        }),
        Err(e) => Err(failed(e.into())),
    }
}

impl Store {
    /// Opens (or creates) the store, refusing a file that is not costmeter's.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_error = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            return Err(StoreError::Empty {
                path: path.to_path_buf(),
            });
        }
        let lock = lock_beside(path)?;
        let conn = Connection::open(path).map_err(open_error)?;
        // A non-SQLite or damaged file fails here, on the first read.
        let application_id: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                    StoreError::Unreadable {
                        path: path.to_path_buf(),
                        detail: e.to_string(),
                    }
                }
                _ => open_error(e),
            })?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_error)?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(open_error)?;
        if application_id != APPLICATION_ID && (application_id != 0 || tables > 0) {
            return Err(StoreError::Foreign {
                path: path.to_path_buf(),
                found: application_id,
            });
        }
        if version > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        // WAL with normal locking: this connection writes, reader connections of the same
        // process read beside it without waiting (the lock file keeps other daemons out).
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA wal_autocheckpoint = 8192;
             PRAGMA busy_timeout = 5000;
             PRAGMA foreign_keys = OFF;",
        )
        .map_err(open_error)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            _lock: Some(lock),
        };
        store.migrate(version)?;
        Ok(store)
    }

    /// A read-only connection to an open store, for reads served beside the writer (WAL: a
    /// reader sees the last committed state and never blocks the writer, nor it the reader).
    pub fn open_reader(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        conn.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")
            .map_err(StoreError::Read)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            _lock: None,
        })
    }

    /// The connection, for read queries kept in their own modules (`runs.rs`).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self, from: usize) -> Result<(), StoreError> {
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(from) {
            let tx = self.conn.transaction().map_err(StoreError::Write)?;
            tx.execute_batch(sql).map_err(StoreError::Write)?;
            tx.execute_batch(&format!(
                "PRAGMA user_version = {}; PRAGMA application_id = {APPLICATION_ID};",
                index + 1
            ))
            .map_err(StoreError::Write)?;
            tx.commit().map_err(StoreError::Write)?;
        }
        Ok(())
    }

    /// Schema version in use.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(StoreError::Read)
    }
}

mod fleet;
pub use fleet::FleetUsage;
mod read;
#[cfg(test)]
mod tests;
mod write;

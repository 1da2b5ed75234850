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
use crate::otlp::streams::{Claim, OtlpState, StateRow, StreamState};
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
];

/// Usage of one agent and model in one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlySpend {
    pub hour_ms: i64,
    pub agent: String,
    pub model: String,
    pub tokens: u64,
    pub usd: f64,
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

    /// Writes a batch in one transaction. Returns, per event, whether it was new (`true`) or a
    /// duplicate of an `event_id` already stored (`false`).
    pub fn commit(
        &mut self,
        events: &[PricedEvent],
        resources: &[ResourceRow],
        otlp: &[StateRow],
        received_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let tx = self.conn.transaction().map_err(StoreError::Write)?;
        let mut fresh = Vec::with_capacity(events.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events (event_id, ts_ms, received_ms, source, type,
                        agent, model, provider, run_id, task_id, task_type,
                        input_tokens, cache_read_tokens, cache_write_tokens, output_tokens,
                        reasoning_tokens, cost_usd, cost_confidence, result, failure_class,
                        error_summary, seconds, bytes, lock, path_hash, trace_id, span_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                        ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)",
                )
                .map_err(StoreError::Write)?;
            for priced in events {
                let row = EventRow::from(priced);
                let changed = insert
                    .execute(params![
                        priced.event.event_id,
                        priced.event.ts_ms,
                        received_ms,
                        priced.source,
                        priced.event.body.type_name(),
                        row.agent,
                        row.model,
                        row.provider,
                        row.run_id,
                        row.task_id,
                        row.task_type,
                        row.input_tokens,
                        row.cache_read_tokens,
                        row.cache_write_tokens,
                        row.output_tokens,
                        row.reasoning_tokens,
                        priced.cost.map(|c| c.usd),
                        priced.cost.map(|c| c.confidence.label()),
                        row.result,
                        row.failure_class,
                        row.error_summary,
                        row.seconds,
                        row.bytes,
                        row.lock,
                        row.path_hash,
                        priced.event.trace_id,
                        priced.event.span_id,
                    ])
                    .map_err(StoreError::Write)?;
                fresh.push(changed == 1);
                if changed == 1 {
                    write_run_or_task(&tx, &priced.event)?;
                }
            }
            let mut sample = tx
                .prepare_cached(
                    "INSERT INTO resource_samples (ts_ms, target, cpu_seconds, read_bytes,
                        written_bytes, rss_bytes, peak_rss_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(StoreError::Write)?;
            let mut baseline = tx
                .prepare_cached(
                    "INSERT INTO target_baselines (target, selector, baseline) VALUES (?1, ?2, ?3)
                     ON CONFLICT(target) DO UPDATE SET selector = excluded.selector, baseline = excluded.baseline",
                )
                .map_err(StoreError::Write)?;
            for row in resources {
                sample
                    .execute(params![
                        row.ts_ms,
                        row.target,
                        row.cpu_seconds,
                        to_i64(row.read_bytes),
                        to_i64(row.written_bytes),
                        to_i64(row.rss_bytes),
                        to_i64(row.peak_rss_bytes),
                    ])
                    .map_err(StoreError::Write)?;
                if let Some((selector, state)) = &row.baseline {
                    baseline
                        .execute(params![row.target, selector, state])
                        .map_err(StoreError::Write)?;
                }
            }
            write_otlp_state(&tx, otlp)?;
        }
        tx.commit().map_err(StoreError::Write)?;
        Ok(fresh)
    }

    /// The OTLP receiver's memory, as last committed.
    pub fn otlp_state(&self) -> Result<OtlpState, StoreError> {
        let mut streams = HashMap::new();
        let mut statement = self
            .conn
            .prepare("SELECT stream, start_ns, time_ns, value, seen_ms FROM otlp_streams")
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    StreamState {
                        start_ns: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        time_ns: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        value: r.get(3)?,
                        seen_ms: r.get(4)?,
                    },
                ))
            })
            .map_err(StoreError::Read)?;
        for row in rows {
            let (key, state) = row.map_err(StoreError::Read)?;
            streams.insert(key, state);
        }
        let mut claims = HashMap::new();
        let mut statement = self
            .conn
            .prepare("SELECT owner, family, last_ms FROM otlp_claims")
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(StoreError::Read)?;
        for row in rows {
            let (owner, family, last_ms) = row.map_err(StoreError::Read)?;
            if let Some(family) = Family::from_label(&family) {
                claims.insert(owner, Claim { family, last_ms });
            }
        }
        Ok(OtlpState::new(streams, claims))
    }

    /// Saved accounting baselines: target → (selector description, serialized baseline).
    pub fn baselines(&self) -> Result<HashMap<String, (String, String)>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT target, selector, baseline FROM target_baselines")
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?))))
            .map_err(StoreError::Read)?;
        rows.collect::<Result<_, _>>().map_err(StoreError::Read)
    }

    /// Everything the metrics need to continue where they were.
    pub fn totals(&self) -> Result<Totals, StoreError> {
        let read = StoreError::Read;
        let mut totals = Totals::default();
        let mut usage: HashMap<(String, String), UsageTotal> = HashMap::new();
        let mut add_usage = |agent: String, model: String, values: [i64; 4], cost: f64| {
            let entry = usage
                .entry((agent.clone(), model.clone()))
                .or_insert_with(|| UsageTotal {
                    agent,
                    model,
                    ..UsageTotal::default()
                });
            let [input, read, write, output] = values.map(|v| u64::try_from(v).unwrap_or(0));
            entry.uncached_input_tokens += input.saturating_sub(read + write);
            entry.cache_read_tokens += read;
            entry.cache_write_tokens += write;
            entry.output_tokens += output;
            entry.cost_usd += cost;
        };
        for sql in [
            "SELECT agent, model, SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),
                SUM(output_tokens), SUM(cost_usd) FROM events WHERE type = 'llm_usage' GROUP BY agent, model",
            "SELECT agent, model, SUM(input_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens),
                SUM(output_tokens), SUM(cost_usd) FROM usage_rollups GROUP BY agent, model",
        ] {
            let mut statement = self.conn.prepare(sql).map_err(read)?;
            let mut rows = statement.query([]).map_err(read)?;
            while let Some(r) = rows.next().map_err(read)? {
                add_usage(
                    r.get(0).map_err(read)?,
                    r.get(1).map_err(read)?,
                    [r.get(2).map_err(read)?, r.get(3).map_err(read)?, r.get(4).map_err(read)?, r.get(5).map_err(read)?],
                    r.get(6).map_err(read)?,
                );
            }
        }
        totals.usage = usage.into_values().collect();
        totals
            .usage
            .sort_by(|a, b| (&a.agent, &a.model).cmp(&(&b.agent, &b.model)));

        totals.unknown_models = self
            .query_triples(
                "SELECT model, COUNT(*), SUM(input_tokens + output_tokens) FROM events
                 WHERE cost_confidence = 'unknown_model' GROUP BY model",
            )?
            .into_iter()
            .map(|(model, events, tokens)| (model, events.parse().unwrap_or(0), tokens))
            .collect();
        totals.tasks = self.query_triples(
            "SELECT task_type, result, COUNT(*) FROM events WHERE type = 'task_end' GROUP BY task_type, result",
        )?;
        totals.events =
            self.query_triples("SELECT source, type, COUNT(*) FROM events GROUP BY source, type")?;
        let mut statement = self
            .conn
            .prepare(
                "SELECT task_type, (ended_ms - started_ms) / 1000.0 FROM tasks
                 WHERE started_ms IS NOT NULL AND ended_ms IS NOT NULL AND ended_ms >= started_ms",
            )
            .map_err(read)?;
        totals.task_durations = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    r.get(1)?,
                ))
            })
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        let mut statement = self
            .conn
            .prepare("SELECT seconds FROM events WHERE type = 'lock_wait'")
            .map_err(read)?;
        totals.lock_waits = statement
            .query_map([], |r| r.get(0))
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        let mut statement = self
            .conn
            .prepare(
                "SELECT target, SUM(cpu), SUM(rd), SUM(wr), MAX(peak) FROM (
                    SELECT target, cpu_seconds AS cpu, read_bytes AS rd, written_bytes AS wr, peak_rss_bytes AS peak FROM resource_samples
                    UNION ALL
                    SELECT target, cpu_seconds, read_bytes, written_bytes, peak_rss_bytes FROM resource_rollups
                 ) GROUP BY target",
            )
            .map_err(read)?;
        totals.resources = statement
            .query_map([], |r| {
                Ok(ResourceTotal {
                    target: r.get(0)?,
                    cpu_seconds: r.get(1)?,
                    read_bytes: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    written_bytes: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    peak_rss_bytes: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                })
            })
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        Ok(totals)
    }

    fn query_triples(&self, sql: &str) -> Result<Vec<(String, String, u64)>, StoreError> {
        let mut statement = self.conn.prepare(sql).map_err(StoreError::Read)?;
        let rows = statement
            .query_map([], |r| {
                let second: rusqlite::types::Value = r.get(1)?;
                let second = match second {
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Integer(i) => i.to_string(),
                    _ => String::new(),
                };
                Ok((
                    r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                    second,
                    u64::try_from(r.get::<_, Option<i64>>(2)?.unwrap_or(0)).unwrap_or(0),
                ))
            })
            .map_err(StoreError::Read)?;
        rows.collect::<Result<_, _>>().map_err(StoreError::Read)
    }

    /// Folds events and resource samples older than `cutoff_ms` into daily rollups and
    /// deletes them. Returns how many rows were folded. Runs, tasks and their totals stay.
    pub fn compact(&mut self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let tx = self.conn.transaction().map_err(StoreError::Write)?;
        let day = "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')";
        tx.execute(
            &format!(
                "INSERT INTO usage_rollups (day, agent, model, input_tokens, cache_read_tokens,
                    cache_write_tokens, output_tokens, cost_usd, events, unknown_model_events)
                 SELECT {day}, agent, model, SUM(input_tokens), SUM(cache_read_tokens),
                    SUM(cache_write_tokens), SUM(output_tokens), SUM(cost_usd), COUNT(*),
                    SUM(cost_confidence = 'unknown_model')
                 FROM events WHERE type = 'llm_usage' AND ts_ms < ?1 GROUP BY 1, agent, model
                 ON CONFLICT (day, agent, model) DO UPDATE SET
                    input_tokens = input_tokens + excluded.input_tokens,
                    cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
                    cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
                    output_tokens = output_tokens + excluded.output_tokens,
                    cost_usd = cost_usd + excluded.cost_usd,
                    events = events + excluded.events,
                    unknown_model_events = unknown_model_events + excluded.unknown_model_events"
            ),
            [cutoff_ms],
        )
        .map_err(StoreError::Write)?;
        tx.execute(
            &format!(
                "INSERT INTO resource_rollups (day, target, cpu_seconds, read_bytes, written_bytes, peak_rss_bytes)
                 SELECT {day}, target, SUM(cpu_seconds), SUM(read_bytes), SUM(written_bytes), MAX(peak_rss_bytes)
                 FROM resource_samples WHERE ts_ms < ?1 GROUP BY 1, target
                 ON CONFLICT (day, target) DO UPDATE SET
                    cpu_seconds = cpu_seconds + excluded.cpu_seconds,
                    read_bytes = read_bytes + excluded.read_bytes,
                    written_bytes = written_bytes + excluded.written_bytes,
                    peak_rss_bytes = MAX(peak_rss_bytes, excluded.peak_rss_bytes)"
            ),
            [cutoff_ms],
        )
        .map_err(StoreError::Write)?;
        // Only usage and resource rows fold; run, task and lock events stay for their tables'
        // sake until those get their own retention.
        let folded_events = tx
            .execute(
                "DELETE FROM events WHERE type = 'llm_usage' AND ts_ms < ?1",
                [cutoff_ms],
            )
            .map_err(StoreError::Write)?;
        let folded_samples = tx
            .execute("DELETE FROM resource_samples WHERE ts_ms < ?1", [cutoff_ms])
            .map_err(StoreError::Write)?;
        tx.execute("DELETE FROM otlp_streams WHERE seen_ms < ?1", [cutoff_ms])
            .map_err(StoreError::Write)?;
        tx.execute("DELETE FROM otlp_claims WHERE last_ms < ?1", [cutoff_ms])
            .map_err(StoreError::Write)?;
        tx.commit().map_err(StoreError::Write)?;
        Ok(folded_events + folded_samples)
    }

    /// Every stored usage charge: (ts, agent, usd, tokens), raw events and daily rollups.
    pub fn usage_charges(&self) -> Result<Vec<StoredCharge>, StoreError> {
        self.charges(&format!(
            // Charged when received, or at ts within the tolerance before (budget::charge_time).
            "SELECT MAX(MIN(ts_ms, received_ms), received_ms - {tolerance}), agent, COALESCE(cost_usd, 0), input_tokens + output_tokens FROM events WHERE type = 'llm_usage'
             UNION ALL
             SELECT CAST(strftime('%s', day) AS INTEGER) * 1000, agent, cost_usd, input_tokens + output_tokens FROM usage_rollups",
            tolerance = crate::budget::TS_TOLERANCE_MS
        ))
    }

    /// Every stored resource charge: (ts, target, cpu seconds, disk bytes).
    pub fn resource_charges(&self) -> Result<Vec<StoredCharge>, StoreError> {
        self.charges(
            "SELECT ts_ms, target, cpu_seconds, read_bytes + written_bytes FROM resource_samples
             UNION ALL
             SELECT CAST(strftime('%s', day) AS INTEGER) * 1000, target, cpu_seconds, read_bytes + written_bytes FROM resource_rollups",
        )
    }

    fn charges(&self, sql: &str) -> Result<Vec<StoredCharge>, StoreError> {
        let mut statement = self.conn.prepare(sql).map_err(StoreError::Read)?;
        let rows = statement
            .query_map([], |r| {
                Ok(StoredCharge {
                    ts_ms: r.get(0)?,
                    owner: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    first: r.get::<_, Option<f64>>(2)?.unwrap_or(0.0),
                    second: r.get::<_, Option<f64>>(3)?.unwrap_or(0.0),
                })
            })
            .map_err(StoreError::Read)?;
        rows.collect::<Result<_, _>>().map_err(StoreError::Read)
    }

    /// Budget states as last recorded: name → (window start, state).
    pub fn budget_states(&self) -> Result<Vec<(String, i64, String)>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT name, window_start_ms, state FROM budget_states")
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(StoreError::Read)?;
        rows.collect::<Result<_, _>>().map_err(StoreError::Read)
    }

    pub fn save_budget_state(
        &mut self,
        name: &str,
        window_start_ms: i64,
        state: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO budget_states (name, window_start_ms, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET window_start_ms = excluded.window_start_ms, state = excluded.state",
                params![name, window_start_ms, state],
            )
            .map(|_| ())
            .map_err(StoreError::Write)
    }

    /// Records what enforcement did: what, whom, why, result.
    #[allow(clippy::too_many_arguments)]
    pub fn record_enforcement(
        &mut self,
        ts_ms: i64,
        target: &str,
        reason: &str,
        signal: &str,
        signalled: usize,
        killed: usize,
        refused: &[String],
        dry_run: bool,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO enforcement_actions (ts_ms, target, reason, signal, signalled, killed, refused, dry_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    ts_ms,
                    target,
                    reason,
                    signal,
                    i64::try_from(signalled).unwrap_or(i64::MAX),
                    i64::try_from(killed).unwrap_or(i64::MAX),
                    refused.join("; "),
                    dry_run
                ],
            )
            .map(|_| ())
            .map_err(StoreError::Write)
    }

    /// When a task started, if its start was recorded.
    pub fn task_started_ms(&self, task_id: &str) -> Result<Option<i64>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT started_ms FROM tasks WHERE task_id = ?1")
            .map_err(StoreError::Read)?;
        let mut rows = statement.query([task_id]).map_err(StoreError::Read)?;
        match rows.next().map_err(StoreError::Read)? {
            Some(row) => row.get(0).map_err(StoreError::Read),
            None => Ok(None),
        }
    }

    /// Usage since `from_ms` by hour, agent and model: (hour start ms, agent, model, tokens,
    /// USD), to fill the spend rollup at start.
    pub fn spend_by_hour(&self, from_ms: i64) -> Result<Vec<HourlySpend>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT (ts_ms / 3600000) * 3600000 AS hour, agent, model,
                        SUM(input_tokens + output_tokens), COALESCE(SUM(cost_usd), 0)
                 FROM events WHERE type = 'llm_usage' AND ts_ms >= ?1 GROUP BY hour, agent, model",
            )
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map([from_ms], |r| {
                Ok(HourlySpend {
                    hour_ms: r.get(0)?,
                    agent: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    model: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    tokens: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    usd: r.get(4)?,
                })
            })
            .map_err(StoreError::Read)?;
        rows.collect::<Result<_, _>>().map_err(StoreError::Read)
    }

    /// Count of stored events, for tests and status.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(StoreError::Read)
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The columns of one event, flattened.
#[derive(Default)]
struct EventRow<'a> {
    agent: Option<&'a str>,
    model: Option<&'a str>,
    provider: Option<&'a str>,
    run_id: Option<&'a str>,
    task_id: Option<&'a str>,
    task_type: Option<&'a str>,
    input_tokens: Option<i64>,
    cache_read_tokens: Option<i64>,
    cache_write_tokens: Option<i64>,
    output_tokens: Option<i64>,
    reasoning_tokens: Option<i64>,
    result: Option<&'a str>,
    failure_class: Option<&'a str>,
    error_summary: Option<&'a str>,
    seconds: Option<f64>,
    bytes: Option<i64>,
    lock: Option<&'a str>,
    path_hash: Option<&'a str>,
}

impl<'a> From<&'a PricedEvent> for EventRow<'a> {
    fn from(priced: &'a PricedEvent) -> Self {
        match &priced.event.body {
            EventBody::LlmUsage(u) => EventRow {
                agent: Some(&u.agent),
                model: Some(&u.model),
                provider: u.provider.as_deref(),
                run_id: u.run_id.as_deref(),
                task_id: u.task_id.as_deref(),
                input_tokens: Some(to_i64(u.input_tokens)),
                cache_read_tokens: Some(to_i64(u.cache_read_tokens)),
                cache_write_tokens: Some(to_i64(u.cache_write_tokens)),
                output_tokens: Some(to_i64(u.output_tokens)),
                reasoning_tokens: Some(to_i64(u.reasoning_tokens)),
                ..EventRow::default()
            },
            EventBody::RunStart { run_id, agent, .. } => EventRow {
                run_id: Some(run_id),
                agent: agent.as_deref(),
                ..EventRow::default()
            },
            EventBody::RunEnd {
                run_id,
                agent,
                outcome,
                ..
            } => EventRow {
                run_id: Some(run_id),
                agent: agent.as_deref(),
                result: Some(&outcome.result),
                failure_class: outcome.failure_class.as_deref(),
                error_summary: outcome.error_summary.as_deref(),
                ..EventRow::default()
            },
            EventBody::TaskStart {
                task_id,
                run_id,
                task_type,
                agent,
            } => EventRow {
                task_id: Some(task_id),
                run_id: run_id.as_deref(),
                task_type: Some(task_type),
                agent: agent.as_deref(),
                ..EventRow::default()
            },
            EventBody::TaskEnd {
                task_id,
                run_id,
                task_type,
                agent,
                outcome,
            } => EventRow {
                task_id: Some(task_id),
                run_id: run_id.as_deref(),
                task_type: Some(task_type),
                agent: agent.as_deref(),
                result: Some(&outcome.result),
                failure_class: outcome.failure_class.as_deref(),
                error_summary: outcome.error_summary.as_deref(),
                ..EventRow::default()
            },
            EventBody::LockWait { seconds, lock } => EventRow {
                seconds: Some(*seconds),
                lock: lock.as_deref(),
                ..EventRow::default()
            },
            EventBody::FileWrite {
                task_id,
                bytes,
                path_hash,
            } => EventRow {
                task_id: task_id.as_deref(),
                bytes: Some(to_i64(*bytes)),
                path_hash: path_hash.as_deref(),
                ..EventRow::default()
            },
        }
    }
}

/// Keeps the runs and tasks tables current: a start or end fills its half of the row.
fn write_run_or_task(tx: &rusqlite::Transaction<'_>, event: &Event) -> Result<(), StoreError> {
    let w = StoreError::Write;
    match &event.body {
        EventBody::RunStart {
            run_id,
            agent,
            name,
        } => {
            tx.execute(
                "INSERT INTO runs (run_id, agent, name, started_ms, trace_id, span_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(run_id) DO UPDATE SET agent = COALESCE(excluded.agent, agent),
                    name = COALESCE(excluded.name, name), started_ms = excluded.started_ms,
                    trace_id = COALESCE(trace_id, excluded.trace_id), span_id = COALESCE(span_id, excluded.span_id)",
                params![run_id, agent, name, event.ts_ms, event.trace_id, event.span_id],
            )
            .map_err(w)?;
        }
        EventBody::RunEnd {
            run_id,
            agent,
            name,
            outcome,
        } => {
            tx.execute(
                "INSERT INTO runs (run_id, agent, name, ended_ms, result, failure_class, error_summary, trace_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(run_id) DO UPDATE SET agent = COALESCE(agent, excluded.agent),
                    name = COALESCE(name, excluded.name), ended_ms = excluded.ended_ms,
                    result = excluded.result, failure_class = excluded.failure_class,
                    error_summary = excluded.error_summary, trace_id = COALESCE(trace_id, excluded.trace_id)",
                params![run_id, agent, name, event.ts_ms, outcome.result, outcome.failure_class, outcome.error_summary, event.trace_id],
            )
            .map_err(w)?;
        }
        EventBody::TaskStart {
            task_id,
            run_id,
            task_type,
            agent,
        } => {
            tx.execute(
                "INSERT INTO tasks (task_id, run_id, task_type, agent, started_ms, trace_id, span_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(task_id) DO UPDATE SET run_id = COALESCE(excluded.run_id, run_id),
                    task_type = excluded.task_type, agent = COALESCE(excluded.agent, agent),
                    started_ms = excluded.started_ms, trace_id = COALESCE(trace_id, excluded.trace_id),
                    span_id = COALESCE(span_id, excluded.span_id)",
                params![task_id, run_id, task_type, agent, event.ts_ms, event.trace_id, event.span_id],
            )
            .map_err(w)?;
        }
        EventBody::TaskEnd {
            task_id,
            run_id,
            task_type,
            agent,
            outcome,
        } => {
            tx.execute(
                "INSERT INTO tasks (task_id, run_id, task_type, agent, ended_ms, result, failure_class, error_summary, trace_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(task_id) DO UPDATE SET run_id = COALESCE(run_id, excluded.run_id),
                    agent = COALESCE(agent, excluded.agent), ended_ms = excluded.ended_ms,
                    result = excluded.result, failure_class = excluded.failure_class,
                    error_summary = excluded.error_summary, trace_id = COALESCE(trace_id, excluded.trace_id)",
                params![task_id, run_id, task_type, agent, event.ts_ms, outcome.result, outcome.failure_class, outcome.error_summary, event.trace_id],
            )
            .map_err(w)?;
        }
        _ => {}
    }
    Ok(())
}

/// Upserts the OTLP receiver's changed streams and claims.
fn write_otlp_state(tx: &rusqlite::Transaction<'_>, rows: &[StateRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut stream = tx
        .prepare_cached(
            "INSERT INTO otlp_streams (stream, start_ns, time_ns, value, seen_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(stream) DO UPDATE SET start_ns = excluded.start_ns, time_ns = excluded.time_ns,
                value = excluded.value, seen_ms = excluded.seen_ms",
        )
        .map_err(StoreError::Write)?;
    let mut claim = tx
        .prepare_cached(
            "INSERT INTO otlp_claims (owner, family, last_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT(owner) DO UPDATE SET family = excluded.family, last_ms = excluded.last_ms",
        )
        .map_err(StoreError::Write)?;
    for row in rows {
        match row {
            StateRow::Stream(key, state) => stream.execute(params![
                key,
                to_i64(state.start_ns),
                to_i64(state.time_ns),
                state.value,
                state.seen_ms
            ]),
            StateRow::Claim(owner, c) => claim.execute(params![owner, c.family.label(), c.last_ms]),
        }
        .map_err(StoreError::Write)?;
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::event::validate;
    use crate::pricing::Confidence;

    fn usage(id: &str, input: u64) -> PricedEvent {
        let value = serde_json::json!({
            "type": "llm_usage", "event_id": id, "agent": "a", "model": "m",
            "input_tokens": input, "output_tokens": 1, "cache_read_tokens": 1
        });
        PricedEvent {
            event: validate(&value, 0).expect("valid"),
            source: "http",
            cost: Some(Cost {
                usd: 0.5,
                confidence: Confidence::Priced,
            }),
        }
    }

    #[test]
    fn duplicates_are_refused_within_and_across_batches_and_reopens() {
        let dir = tempfile_dir();
        let path = dir.join("s.db");
        let mut store = Store::open(&path).expect("open");
        assert_eq!(
            store
                .commit(
                    &[usage("e1", 10), usage("e1", 10), usage("e2", 5)],
                    &[],
                    &[],
                    0
                )
                .expect("commit"),
            vec![true, false, true]
        );
        drop(store);
        let mut store = Store::open(&path).expect("reopen");
        assert_eq!(
            store
                .commit(&[usage("e2", 5)], &[], &[], 0)
                .expect("commit"),
            vec![false]
        );
        let totals = store.totals().expect("totals");
        assert_eq!(totals.usage.len(), 1);
        assert_eq!(totals.usage[0].uncached_input_tokens, 13);
        assert_eq!(totals.usage[0].cache_read_tokens, 2);
        assert!((totals.usage[0].cost_usd - 1.0).abs() < 1e-12);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn compaction_keeps_totals() {
        let dir = tempfile_dir();
        let mut store = Store::open(&dir.join("s.db")).expect("open");
        store
            .commit(
                &[usage("e1", 10), usage("e2", 20)],
                &[ResourceRow {
                    ts_ms: 5,
                    target: "t".into(),
                    cpu_seconds: 1.5,
                    read_bytes: 1,
                    written_bytes: 2,
                    rss_bytes: 3,
                    peak_rss_bytes: 4,
                    baseline: None,
                }],
                &[],
                0,
            )
            .expect("commit");
        let before = store.totals().expect("totals");
        assert_eq!(store.compact(86_400_000).expect("compact"), 3);
        assert_eq!(store.event_count().expect("count"), 0);
        let after = store.totals().expect("totals");
        assert_eq!(before.usage, after.usage);
        assert_eq!(before.resources, after.resources);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_foreign_database_is_refused_untouched() {
        let dir = tempfile_dir();
        let path = dir.join("other.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch("CREATE TABLE notes (x TEXT)")
            .expect("create");
        drop(conn);
        let error = Store::open(&path).err().expect("refused");
        assert!(
            error.to_string().contains("is not a costmeter store"),
            "{error}"
        );
        std::fs::write(
            dir.join("garbage.db"),
            b"this is not sqlite at all, just text......",
        )
        .expect("write");
        assert!(Store::open(&dir.join("garbage.db")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "costmeter-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}

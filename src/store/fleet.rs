//! What the fleet pusher reads: usage in store order, after the last event Redis has.
//!
//! `seq` only grows: compaction keeps the newest event's row (emptied, as `folded`) so a
//! deleted maximum is never handed out again, and a cursor in Redis stays meaningful.

use super::{Store, StoreError};

/// One stored usage event, as the fleet counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetUsage {
    pub seq: i64,
    /// When budgets charge it ([`crate::budget::charge_time`], as `usage_charges` reads it).
    pub charged_ms: i64,
    pub agent: Option<String>,
    pub usd: f64,
    pub tokens: f64,
}

impl Store {
    /// This store's id (migration 6).
    pub fn store_id(&self) -> Result<String, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
                r.get(0)
            })
            .map_err(StoreError::Read)
    }

    /// Usage events after `seq`, oldest first, at most `limit`.
    pub fn usage_after(&self, seq: i64, limit: usize) -> Result<Vec<FleetUsage>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT seq, MAX(MIN(ts_ms, received_ms), received_ms - {tolerance}), agent,
                    COALESCE(cost_usd, 0), COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)
                 FROM events WHERE seq > ?1 AND type = 'llm_usage' ORDER BY seq LIMIT ?2",
                tolerance = crate::budget::TS_TOLERANCE_MS
            ))
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map(
                rusqlite::params![seq, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(FleetUsage {
                        seq: r.get(0)?,
                        charged_ms: r.get(1)?,
                        agent: r.get(2)?,
                        usd: r.get(3)?,
                        tokens: r.get::<_, i64>(4)? as f64,
                    })
                },
            )
            .map_err(StoreError::Read)?;
        rows.collect::<Result<_, _>>().map_err(StoreError::Read)
    }

    /// How many usage events come after `seq`: the fleet backlog.
    pub fn usage_count_after(&self, seq: i64) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM events WHERE seq > ?1 AND type = 'llm_usage'",
                [seq],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(StoreError::Read)
    }

    /// The last event's seq (0 for none).
    pub fn last_seq(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(StoreError::Read)
    }
}

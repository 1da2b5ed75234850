//! Reads the ledger needs at start and as it runs: totals to restore, charges to replay,
//! baselines, OTLP stream state, budget states, the hourly spend.

use super::*;

impl Store {
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
            .prepare("SELECT owner, family, last_ms, covered_ms, inherited_ms, held_until_ms FROM otlp_claims")
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })
            .map_err(StoreError::Read)?;
        for row in rows {
            let (owner, family, last_ms, covered_ms, inherited_ms, held_until_ms) =
                row.map_err(StoreError::Read)?;
            if let Some(family) = Family::from_label(&family) {
                claims.insert(
                    owner,
                    Claim {
                        family,
                        last_ms,
                        covered_ms,
                        inherited_ms,
                        held_until_ms,
                    },
                );
            }
        }
        let mut held = Vec::new();
        let mut statement = self
            .conn
            .prepare("SELECT held FROM otlp_held")
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(StoreError::Read)?;
        for row in rows {
            // A row this costmeter cannot read was written by no costmeter: skip it.
            if let Ok(h) = serde_json::from_str::<Held>(&row.map_err(StoreError::Read)?) {
                held.push(h);
            }
        }
        Ok(OtlpState::new(streams, claims, held))
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
                 WHERE cost_confidence = 'unknown_model' AND type <> 'folded' GROUP BY model",
            )?
            .into_iter()
            .map(|(model, events, tokens)| (model, events.parse().unwrap_or(0), tokens))
            .collect();
        totals.tasks = self.query_triples(
            "SELECT task_type, result, COUNT(*) FROM events WHERE type = 'task_end' GROUP BY task_type, result",
        )?;
        totals.events =
            self.query_triples("SELECT source, type, COUNT(*) FROM events WHERE type <> 'folded' GROUP BY source, type")?;
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

    pub(super) fn query_triples(
        &self,
        sql: &str,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
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

    pub(super) fn charges(&self, sql: &str) -> Result<Vec<StoredCharge>, StoreError> {
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
                        SUM(input_tokens + output_tokens), COALESCE(SUM(cost_usd), 0),
                        SUM(input_tokens - cache_read_tokens - cache_write_tokens),
                        SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(output_tokens),
                        COUNT(*), COALESCE(cost_confidence, 'unknown_model') AS confidence
                 FROM events WHERE type = 'llm_usage' AND ts_ms >= ?1
                 GROUP BY hour, agent, model, confidence",
            )
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map([from_ms], |r| {
                Ok(HourlySpend {
                    hour_ms: r.get(0)?,
                    agent: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    model: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    tokens: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    kinds: [5, 6, 7, 8].map(|column| {
                        r.get::<_, Option<i64>>(column)
                            .ok()
                            .flatten()
                            .and_then(|n| u64::try_from(n).ok())
                            .unwrap_or(0)
                    }),
                    usd: r.get(4)?,
                    events: u64::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
                    confidence: r.get(10)?,
                })
            })
            .map_err(StoreError::Read)?;
        rows.collect::<Result<_, _>>().map_err(StoreError::Read)
    }

    /// Resource samples since `from_ms`, oldest first, at most `limit` (the newest kept).
    pub fn resource_points(
        &self,
        from_ms: i64,
        limit: usize,
    ) -> Result<Vec<ResourcePoint>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT ts_ms, target, cpu_seconds, read_bytes + written_bytes, rss_bytes
                 FROM (SELECT * FROM resource_samples WHERE ts_ms >= ?1 ORDER BY ts_ms DESC LIMIT ?2)
                 ORDER BY ts_ms",
            )
            .map_err(StoreError::Read)?;
        let rows = statement
            .query_map(
                params![from_ms, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(ResourcePoint {
                        ts_ms: r.get(0)?,
                        target: r.get(1)?,
                        cpu_seconds: r.get(2)?,
                        disk_bytes: r.get::<_, i64>(3)? as f64,
                        rss_bytes: r.get::<_, i64>(4)? as f64,
                    })
                },
            )
            .map_err(StoreError::Read)?;
        rows.collect::<Result<_, _>>().map_err(StoreError::Read)
    }

    /// Count of stored events, for tests and status.
    pub fn event_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM events WHERE type <> 'folded'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(StoreError::Read)
    }
}

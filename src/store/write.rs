//! Writes: the group commit, compaction into rollups, budget states and enforcement records.

use super::*;

impl Store {
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
            let mut call = tx
                .prepare_cached("INSERT OR IGNORE INTO calls (call_id, ts_ms) VALUES (?1, ?2)")
                .map_err(StoreError::Write)?;
            for priced in events {
                // A call already counted under any of its ids, by any source, is a duplicate.
                let mut seen_call = false;
                if let EventBody::LlmUsage(usage) = &priced.event.body {
                    for id in &usage.call_ids {
                        let new = call
                            .execute(params![id, priced.event.ts_ms])
                            .map_err(StoreError::Write)?;
                        seen_call |= new == 0;
                    }
                }
                if seen_call {
                    fresh.push(false);
                    continue;
                }
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
        // The newest row stays, emptied: seq must never be handed out twice (the fleet's
        // cursor in Redis counts on it), and SQLite reuses a deleted maximum.
        let emptied = tx
            .execute(
                "UPDATE events SET type = 'folded', input_tokens = 0, cache_read_tokens = 0,
                cache_write_tokens = 0, output_tokens = 0, reasoning_tokens = 0, cost_usd = 0
             WHERE seq = (SELECT MAX(seq) FROM events) AND type = 'llm_usage' AND ts_ms < ?1",
                [cutoff_ms],
            )
            .map_err(StoreError::Write)?;
        let folded_events = tx
            .execute(
                "DELETE FROM events WHERE type = 'llm_usage' AND ts_ms < ?1",
                [cutoff_ms],
            )
            .map_err(StoreError::Write)?;
        tx.execute("DELETE FROM calls WHERE ts_ms < ?1", [cutoff_ms])
            .map_err(StoreError::Write)?;
        let folded_samples = tx
            .execute("DELETE FROM resource_samples WHERE ts_ms < ?1", [cutoff_ms])
            .map_err(StoreError::Write)?;
        tx.execute("DELETE FROM otlp_streams WHERE seen_ms < ?1", [cutoff_ms])
            .map_err(StoreError::Write)?;
        tx.execute(
            "DELETE FROM otlp_claims WHERE last_ms < ?1 AND held_until_ms IS NULL",
            [cutoff_ms],
        )
        .map_err(StoreError::Write)?;
        tx.commit().map_err(StoreError::Write)?;
        Ok(emptied + folded_events + folded_samples)
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
            "INSERT INTO otlp_claims (owner, family, last_ms, covered_ms, inherited_ms, held_until_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(owner) DO UPDATE SET family = excluded.family, last_ms = excluded.last_ms,
                covered_ms = excluded.covered_ms, inherited_ms = excluded.inherited_ms,
                held_until_ms = excluded.held_until_ms",
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
            StateRow::Claim(owner, c) => claim.execute(params![
                owner,
                c.family.label(),
                c.last_ms,
                c.covered_ms,
                c.inherited_ms,
                c.held_until_ms
            ]),
            StateRow::Hold(held) => tx
                .prepare_cached("INSERT OR REPLACE INTO otlp_held (key, held) VALUES (?1, ?2)")
                .and_then(|mut s| {
                    let json = serde_json::to_string(held).unwrap_or_default();
                    s.execute(params![held.key(), json])
                }),
            StateRow::Unhold(key) => tx
                .prepare_cached("DELETE FROM otlp_held WHERE key = ?1")
                .and_then(|mut s| s.execute([key])),
            StateRow::Seen(ids, ts_ms) => tx
                .prepare_cached("INSERT OR IGNORE INTO calls (call_id, ts_ms) VALUES (?1, ?2)")
                .and_then(|mut s| {
                    ids.iter()
                        .try_fold(0, |n, id| Ok(n + s.execute(params![id, ts_ms])?))
                }),
        }
        .map_err(StoreError::Write)?;
    }
    Ok(())
}

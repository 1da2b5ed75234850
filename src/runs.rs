//! Runs and tasks as the API shows them: "which run failed most recently, why, and what did it
//! cost?" without reading logs. Read from a reader connection beside the ledger; answers carry
//! no prompt text because none is stored.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// A task's (trace id, run id).
pub type TaskTrace = (Option<String>, Option<String>);

/// Filters of `GET /v1/runs`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// running, success, failure, cancelled or timeout.
    pub status: Option<String>,
    pub agent: Option<String>,
    /// Runs that started (or, lacking a start, ended) at or after this time.
    pub since_ms: Option<i64>,
    pub limit: usize,
    /// Continue after this (started_ms, run_id), newest first.
    pub after: Option<(i64, String)>,
}

/// The resources and usage one task cost (ADR 19-O3).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CostRecord {
    /// CPU seconds the agent's target used over the task's time.
    pub cpu_seconds: f64,
    /// Disk bytes read and written by the target over the task's time.
    pub disk_bytes: u64,
    /// Highest tree RSS sampled over the task's time.
    pub mem_peak_bytes: u64,
    /// Tokens of usage events tagged with the task.
    pub tokens: u64,
    /// USD of usage events tagged with the task.
    pub usd: f64,
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageLine {
    pub task_type: Option<String>,
    pub model: String,
    pub tokens: u64,
    pub usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunSummary {
    pub id: String,
    pub agent: Option<String>,
    pub name: Option<String>,
    /// running, success, failure, cancelled or timeout.
    pub status: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_seconds: Option<f64>,
    /// Finished tasks by result.
    pub tasks: BTreeMap<String, u64>,
    pub usage: Vec<UsageLine>,
    pub failure_class: Option<String>,
    pub error_summary: Option<String>,
    pub trace_id: Option<String>,
    #[serde(skip)]
    pub sort_ms: i64,
    /// The agent's span the run started under (run_start's `span_id`).
    #[serde(skip)]
    pub parent_span_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskDetail {
    pub id: String,
    pub run_id: Option<String>,
    #[serde(rename = "type")]
    pub task_type: Option<String>,
    pub agent: Option<String>,
    pub status: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub duration_seconds: Option<f64>,
    pub failure_class: Option<String>,
    pub error_summary: Option<String>,
    pub cost_record: CostRecord,
    /// The agent's span the task started under (task_start's `span_id`).
    #[serde(skip)]
    pub parent_span_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunSummary,
    pub task_list: Vec<TaskDetail>,
}

/// One page of runs and the cursor for the next.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    pub next_cursor: Option<String>,
}

fn iso(ms: Option<i64>) -> Option<String> {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string())
}

fn duration(start: Option<i64>, end: Option<i64>) -> Option<f64> {
    match (start, end) {
        (Some(start), Some(end)) if end >= start => Some((end - start) as f64 / 1000.0),
        _ => None,
    }
}

/// The query of `GET /v1/runs`, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RunsQuery {
    pub status: Option<String>,
    pub agent: Option<String>,
    pub since: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// Default and largest page of `GET /v1/runs`.
pub const RUNS_PAGE: usize = 50;
pub const RUNS_PAGE_MAX: usize = 500;

impl RunFilter {
    /// The filter a query asks for, at `now_ms` (for `since=7d`); or what is wrong with it,
    /// naming the parameter and the rule.
    pub fn from_query(query: RunsQuery, now_ms: i64) -> Result<RunFilter, String> {
        let status = match query.status.as_deref() {
            None => None,
            Some("failed") => Some("failure".to_string()),
            Some(s @ ("running" | "success" | "failure" | "cancelled" | "timeout")) => {
                Some(s.to_string())
            }
            Some(other) => {
                return Err(format!(
                    "status '{other}' is not one of running, success, failure (or failed), cancelled, timeout"
                ));
            }
        };
        let since_ms = match query.since.as_deref() {
            None => None,
            Some(text) => match (
                humantime::parse_duration(text),
                text.parse::<jiff::Timestamp>(),
            ) {
                (Ok(ago), _) => {
                    Some(now_ms.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)))
                }
                (_, Ok(at)) => Some(at.as_millisecond()),
                _ => {
                    return Err(format!(
                        "since '{text}' is neither a duration such as \"7d\" nor an RFC 3339 time"
                    ));
                }
            },
        };
        let limit = query.limit.unwrap_or(RUNS_PAGE);
        if !(1..=RUNS_PAGE_MAX).contains(&limit) {
            return Err(format!(
                "limit {limit} must be between 1 and {RUNS_PAGE_MAX}"
            ));
        }
        let after = match query.cursor.as_deref() {
            None => None,
            Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
                "cursor is not one this API gave out; start again without it".to_string()
            })?),
        };
        Ok(RunFilter {
            status,
            agent: query.agent,
            since_ms,
            limit,
            after,
        })
    }
}

/// The opaque cursor: hex of "sort_ms:run_id", so clients cannot lean on its shape.
pub fn encode_cursor(sort_ms: i64, run_id: &str) -> String {
    format!("{sort_ms}:{run_id}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn decode_cursor(cursor: &str) -> Option<(i64, String)> {
    if !cursor.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (ms, id) = text.split_once(':')?;
    Some((ms.parse().ok()?, id.to_string()))
}

const RUN_COLUMNS: &str =
    "run_id, agent, name, started_ms, ended_ms, result, failure_class, error_summary, trace_id,
     COALESCE(started_ms, ended_ms, 0) AS sort_ms, span_id";

impl Store {
    /// A page of runs, newest first.
    pub fn runs(&self, filter: &RunFilter) -> Result<RunPage, StoreError> {
        let read = StoreError::Read;
        let status = filter.status.clone().unwrap_or_default();
        let (after_ms, after_id) = filter.after.clone().unwrap_or((i64::MAX, String::new()));
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs
             WHERE (?1 = '' OR (?1 = 'running' AND ended_ms IS NULL) OR result = ?1)
               AND (?2 IS NULL OR agent = ?2)
               AND (?3 IS NULL OR COALESCE(started_ms, ended_ms, 0) >= ?3)
               AND (COALESCE(started_ms, ended_ms, 0), run_id) < (?4, ?5)
             ORDER BY sort_ms DESC, run_id DESC
             LIMIT ?6"
        );
        let limit = i64::try_from(filter.limit + 1).unwrap_or(i64::MAX);
        let mut runs = {
            let mut statement = self.conn().prepare(&sql).map_err(read)?;
            let rows = statement
                .query_map(
                    params![
                        status,
                        filter.agent,
                        filter.since_ms,
                        after_ms,
                        after_id,
                        limit
                    ],
                    run_from_row,
                )
                .map_err(read)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(read)?
        };
        let more = runs.len() > filter.limit;
        runs.truncate(filter.limit);
        for run in &mut runs {
            self.fill_run(run)?;
        }
        let next_cursor = more
            .then(|| runs.last().map(|r| encode_cursor(r.sort_ms, &r.id)))
            .flatten();
        Ok(RunPage { runs, next_cursor })
    }

    /// One run with its tasks and their cost records.
    pub fn run(&self, run_id: &str) -> Result<Option<RunDetail>, StoreError> {
        let read = StoreError::Read;
        let run = self
            .conn()
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = ?1"),
                [run_id],
                run_from_row,
            )
            .optional()
            .map_err(read)?;
        let Some(mut run) = run else { return Ok(None) };
        self.fill_run(&mut run)?;
        let task_list = self.tasks_of(Some(run_id))?;
        Ok(Some(RunDetail { run, task_list }))
    }

    /// One task with its cost record.
    pub fn task(&self, task_id: &str) -> Result<Option<TaskDetail>, StoreError> {
        let read = StoreError::Read;
        let row = self
            .conn()
            .query_row(
                "SELECT task_id, run_id, task_type, agent, started_ms, ended_ms, result, failure_class,
                        error_summary, trace_id, span_id FROM tasks WHERE task_id = ?1",
                [task_id],
                |r| {
                    Ok((
                        TaskDetail {
                            id: r.get(0)?,
                            run_id: r.get(1)?,
                            task_type: r.get(2)?,
                            agent: r.get(3)?,
                            status: r.get::<_, Option<String>>(6)?.unwrap_or_else(|| "running".into()),
                            started: iso(r.get(4)?),
                            ended: iso(r.get(5)?),
                            duration_seconds: duration(r.get(4)?, r.get(5)?),
                            failure_class: r.get(7)?,
                            error_summary: r.get(8)?,
                            cost_record: CostRecord { trace_id: r.get(9)?, ..CostRecord::default() },
                            parent_span_id: r.get(10)?,
                        },
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .optional()
            .map_err(read)?;
        let Some((mut task, started, ended)) = row else {
            return Ok(None);
        };
        let (tokens, usd): (i64, f64) = self
            .conn()
            .query_row(
                "SELECT COALESCE(SUM(input_tokens + output_tokens), 0), COALESCE(SUM(cost_usd), 0)
                 FROM events WHERE type = 'llm_usage' AND task_id = ?1",
                [task_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(read)?;
        task.cost_record.tokens = u64::try_from(tokens).unwrap_or(0);
        task.cost_record.usd = usd;
        if let Some(start) = started {
            // The agent's own target if one bears its name, else every target but the sidecar.
            let end = ended.unwrap_or(i64::MAX);
            let (cpu, disk, peak): (f64, i64, i64) = self
                .conn()
                .query_row(
                    "SELECT COALESCE(SUM(cpu_seconds), 0), COALESCE(SUM(read_bytes + written_bytes), 0),
                            COALESCE(MAX(rss_bytes), 0)
                     FROM resource_samples
                     WHERE ts_ms > ?1 AND ts_ms <= ?2
                       AND (target = ?3 OR (NOT EXISTS (SELECT 1 FROM resource_samples WHERE target = ?3)
                                            AND target != 'costmeter'))",
                    params![start, end, task.agent],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(read)?;
            task.cost_record.cpu_seconds = cpu;
            task.cost_record.disk_bytes = u64::try_from(disk).unwrap_or(0);
            task.cost_record.mem_peak_bytes = u64::try_from(peak).unwrap_or(0);
        }
        Ok(Some(task))
    }

    /// Task counts and usage of a run.
    fn fill_run(&self, run: &mut RunSummary) -> Result<(), StoreError> {
        let read = StoreError::Read;
        let mut statement = self
            .conn()
            .prepare("SELECT COALESCE(result, 'running'), COUNT(*) FROM tasks WHERE run_id = ?1 GROUP BY 1")
            .map_err(read)?;
        let counts = statement
            .query_map([&run.id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(read)?;
        for count in counts {
            let (result, n) = count.map_err(read)?;
            run.tasks.insert(result, u64::try_from(n).unwrap_or(0));
        }
        let mut statement = self
            .conn()
            .prepare(
                "SELECT t.task_type, e.model, SUM(e.input_tokens + e.output_tokens), COALESCE(SUM(e.cost_usd), 0)
                 FROM events e LEFT JOIN tasks t ON e.task_id = t.task_id
                 WHERE e.type = 'llm_usage' AND (e.run_id = ?1 OR t.run_id = ?1)
                 GROUP BY t.task_type, e.model ORDER BY t.task_type, e.model",
            )
            .map_err(read)?;
        let lines = statement
            .query_map([&run.id], |r| {
                Ok(UsageLine {
                    task_type: r.get(0)?,
                    model: r.get(1)?,
                    tokens: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                    usd: r.get(3)?,
                })
            })
            .map_err(read)?;
        run.usage = lines.collect::<Result<_, _>>().map_err(read)?;
        Ok(())
    }
}

/// The status file's text: one entry per task, each with its cost_record block.
pub fn status_file_text(run_id: &str, tasks: &[TaskDetail]) -> String {
    let mut text = format!("# costmeter status for run {run_id}\n");
    for task in tasks {
        let record = &task.cost_record;
        text.push_str(&format!(
            "\ntask {}\n  type: {}\n  status: {}\n  started: {}\n  ended: {}\n  duration_seconds: {}\n",
            task.id,
            task.task_type.as_deref().unwrap_or("-"),
            task.status,
            task.started.as_deref().unwrap_or("-"),
            task.ended.as_deref().unwrap_or("-"),
            task.duration_seconds.map_or("-".to_string(), |d| d.to_string()),
        ));
        if let Some(class) = &task.failure_class {
            text.push_str(&format!("  failure_class: {class}\n"));
        }
        text.push_str(&format!(
            "  cost_record:\n    cpu_seconds: {}\n    disk_bytes: {}\n    mem_peak_bytes: {}\n    tokens: {}\n    usd: {}\n    trace_id: {}\n",
            record.cpu_seconds,
            record.disk_bytes,
            record.mem_peak_bytes,
            record.tokens,
            record.usd,
            record.trace_id.as_deref().unwrap_or("-"),
        ));
    }
    text
}

impl Store {
    /// A task's trace id and run id, without its cost record: what a child span needs.
    pub fn task_trace(&self, task_id: &str) -> Result<Option<TaskTrace>, StoreError> {
        self.conn()
            .query_row(
                "SELECT trace_id, run_id FROM tasks WHERE task_id = ?1",
                [task_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(StoreError::Read)
    }

    /// A run's trace id, if its events carried one.
    pub fn run_trace_id(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT trace_id FROM runs WHERE run_id = ?1",
                [run_id],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(StoreError::Read)
    }

    /// The tasks of a run (or, for `None`, those of no run), oldest first.
    pub fn tasks_of(&self, run_id: Option<&str>) -> Result<Vec<TaskDetail>, StoreError> {
        let ids: Vec<String> = {
            let mut statement = self
                .conn()
                .prepare(
                    "SELECT task_id FROM tasks WHERE run_id IS ?1
                     ORDER BY COALESCE(started_ms, ended_ms), task_id",
                )
                .map_err(StoreError::Read)?;
            let rows = statement
                .query_map([run_id], |r| r.get(0))
                .map_err(StoreError::Read)?;
            rows.collect::<Result<_, _>>().map_err(StoreError::Read)?
        };
        let mut tasks = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(task) = self.task(&id)? {
                tasks.push(task);
            }
        }
        Ok(tasks)
    }
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    let started: Option<i64> = r.get(3)?;
    let ended: Option<i64> = r.get(4)?;
    Ok(RunSummary {
        id: r.get(0)?,
        agent: r.get(1)?,
        name: r.get(2)?,
        status: r
            .get::<_, Option<String>>(5)?
            .unwrap_or_else(|| "running".into()),
        started: iso(started),
        ended: iso(ended),
        duration_seconds: duration(started, ended),
        tasks: BTreeMap::new(),
        usage: Vec::new(),
        failure_class: r.get(6)?,
        error_summary: r.get(7)?,
        trace_id: r.get(8)?,
        sort_ms: r.get(9)?,
        parent_span_id: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = encode_cursor(1_795_428_000_000, "run:7");
        assert_eq!(
            decode_cursor(&cursor),
            Some((1_795_428_000_000, "run:7".to_string()))
        );
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor("abc"), None);
    }
}

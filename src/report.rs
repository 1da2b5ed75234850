//! The weekly cost report (ADR 19-O5): spend by agent, model and day, the costliest tasks,
//! budget states and failed runs over a window, as JSON or Markdown. Served at
//! `GET /v1/report` and written every `[report] every` to `cost_report_<ISO week>.md`.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::budget::BudgetStatus;
use crate::store::{Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpendLine {
    pub day: String,
    pub agent: String,
    pub model: String,
    pub tokens: u64,
    pub usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskLine {
    pub task_id: String,
    pub task_type: Option<String>,
    pub run_id: Option<String>,
    pub tokens: u64,
    pub usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureLine {
    pub run_id: String,
    pub agent: Option<String>,
    pub ended: Option<String>,
    pub result: String,
    pub failure_class: Option<String>,
    pub error_summary: Option<String>,
}

/// What a bounded list left out, summed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Omitted {
    pub lines: u64,
    pub tokens: u64,
    pub usd: f64,
}

impl Omitted {
    /// What `listed` left out of `count` lines summing to the totals; `None` when nothing.
    pub fn of(
        count: usize,
        total_tokens: u64,
        total_usd: f64,
        listed: &[SpendLine],
    ) -> Option<Omitted> {
        (count > listed.len()).then(|| Omitted {
            lines: (count - listed.len()) as u64,
            tokens: total_tokens.saturating_sub(listed.iter().map(|s| s.tokens).sum()),
            usd: (total_usd - listed.iter().fold(0.0, |sum, s| sum + s.usd)).max(0.0),
        })
    }
}

/// Most spend lines a report lists: the costliest; the rest are summed in `spend_omitted`.
pub const MAX_SPEND_LINES: usize = 200;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub from: String,
    pub to: String,
    /// Over every line, listed or not.
    pub total_usd: f64,
    pub total_tokens: u64,
    /// The costliest [`MAX_SPEND_LINES`] (day, agent, model) lines, by day, agent and model.
    pub spend: Vec<SpendLine>,
    /// The lines past the cap, summed; absent when none was left out.
    pub spend_omitted: Option<Omitted>,
    pub top_tasks: Vec<TaskLine>,
    pub budgets: Vec<BudgetStatus>,
    pub failures: Vec<FailureLine>,
    /// How the USD of the window's usage events was obtained (events kept whole; days already
    /// folded into rollups are not split).
    #[serde(default)]
    pub cost_confidence: Vec<ConfidenceLine>,
}

/// Usage events and their USD of one confidence: exact, priced, cache_price_fallback,
/// estimated, unknown_model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConfidenceLine {
    pub confidence: String,
    pub events: u64,
    pub usd: f64,
}

/// The query of `GET /v1/report`, as sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReportQuery {
    pub window: Option<String>,
    pub format: Option<String>,
}

impl ReportQuery {
    /// The window in ms (default 7 days, at least a minute) and whether Markdown is wanted;
    /// or what is wrong, naming the parameter.
    pub fn parse(&self) -> Result<(i64, bool), String> {
        let window = self.window.as_deref().unwrap_or("7d");
        let window_ms = match humantime::parse_duration(window) {
            Ok(d) if d.as_secs() >= 60 => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            _ => {
                return Err(format!(
                    "window '{window}' is not a duration of at least 1m such as \"7d\""
                ));
            }
        };
        let markdown = match self.format.as_deref() {
            None | Some("json") => false,
            Some("md" | "markdown") => true,
            Some(other) => return Err(format!("format '{other}' is not md or json")),
        };
        Ok((window_ms, markdown))
    }
}

/// An RFC 3339 time for ms since the epoch; empty when out of range.
pub fn iso(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl Report {
    /// A report from its spend lines, in any order and possibly split (the same day, agent
    /// and model twice: they are added up): totals over every line, the costliest
    /// [`MAX_SPEND_LINES`] listed by day, agent and model, the rest summed.
    pub fn assemble(
        from_ms: i64,
        to_ms: i64,
        lines: Vec<SpendLine>,
        top_tasks: Vec<TaskLine>,
        failures: Vec<FailureLine>,
        budgets: Vec<BudgetStatus>,
    ) -> Report {
        let mut merged: std::collections::HashMap<(String, String, String), (u64, f64)> =
            std::collections::HashMap::with_capacity(lines.len());
        for line in lines {
            let slot = merged
                .entry((line.day, line.agent, line.model))
                .or_default();
            slot.0 += line.tokens;
            slot.1 += line.usd;
        }
        let mut spend: Vec<SpendLine> = merged
            .into_iter()
            .map(|((day, agent, model), (tokens, usd))| SpendLine {
                day,
                agent,
                model,
                tokens,
                usd,
            })
            .collect();
        let total_tokens = spend.iter().map(|l| l.tokens).sum();
        let total_usd = spend.iter().fold(0.0, |sum, l| sum + l.usd);
        let count = spend.len();
        spend.sort_by(|a, b| {
            b.usd
                .total_cmp(&a.usd)
                .then(b.tokens.cmp(&a.tokens))
                .then_with(|| (&a.day, &a.agent, &a.model).cmp(&(&b.day, &b.agent, &b.model)))
        });
        spend.truncate(MAX_SPEND_LINES);
        spend.sort_by(|a, b| (&a.day, &a.agent, &a.model).cmp(&(&b.day, &b.agent, &b.model)));
        let spend_omitted = Omitted::of(count, total_tokens, total_usd, &spend);
        Report {
            from: iso(from_ms),
            to: iso(to_ms),
            total_usd,
            total_tokens,
            spend,
            spend_omitted,
            top_tasks,
            budgets,
            failures,
            cost_confidence: Vec::new(),
        }
    }
}

/// The spend lines of raw events in [from_ms, to_ms), by day, agent and model; the window is
/// short (the part of an hour the rollup does not split), so the lines are few.
const RAW_LINES: &str =
    "SELECT strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch') AS day, agent, model,
        SUM(input_tokens + output_tokens), COALESCE(SUM(cost_usd), 0) + 0.0
    FROM events WHERE type = 'llm_usage' AND ts_ms >= ?1 AND ts_ms < ?2
    GROUP BY day, agent, model";

fn spend_line(r: &rusqlite::Row<'_>) -> rusqlite::Result<SpendLine> {
    Ok(SpendLine {
        day: r.get(0)?,
        agent: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
        model: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
        tokens: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
        usd: r.get(4)?,
    })
}

impl Store {
    /// The spend lines of raw usage events in [from_ms, to_ms) (rollups not included).
    pub fn raw_spend_lines(&self, from_ms: i64, to_ms: i64) -> Result<Vec<SpendLine>, StoreError> {
        let read = StoreError::Read;
        let mut statement = self.conn().prepare_cached(RAW_LINES).map_err(read)?;
        statement
            .query_map(params![from_ms, to_ms], spend_line)
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)
    }

    /// Usage events of [from_ms, to_ms) and their USD by cost confidence.
    pub fn cost_confidence(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<ConfidenceLine>, StoreError> {
        let read = StoreError::Read;
        let mut statement = self
            .conn()
            .prepare_cached(
                "SELECT COALESCE(cost_confidence, 'unknown_model'), COUNT(*), COALESCE(SUM(cost_usd), 0) + 0.0
                 FROM events WHERE type = 'llm_usage' AND ts_ms >= ?1 AND ts_ms < ?2
                 GROUP BY 1 ORDER BY 1",
            )
            .map_err(read)?;
        statement
            .query_map(params![from_ms, to_ms], |r| {
                Ok(ConfidenceLine {
                    confidence: r.get(0)?,
                    events: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                    usd: r.get(2)?,
                })
            })
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)
    }

    /// The costliest tasks and the failed runs of [from_ms, to_ms): the report's parts that
    /// are not spend lines.
    pub fn report_details(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<(Vec<TaskLine>, Vec<FailureLine>), StoreError> {
        let read = StoreError::Read;
        let mut statement = self
            .conn()
            .prepare_cached(
                "SELECT e.task_id, t.task_type, t.run_id, SUM(e.input_tokens + e.output_tokens), COALESCE(SUM(e.cost_usd), 0) AS usd
                 FROM events e LEFT JOIN tasks t ON t.task_id = e.task_id
                 WHERE e.type = 'llm_usage' AND e.task_id IS NOT NULL AND e.ts_ms >= ?1 AND e.ts_ms < ?2
                 GROUP BY e.task_id ORDER BY usd DESC, e.task_id LIMIT 10",
            )
            .map_err(read)?;
        let top_tasks: Vec<TaskLine> = statement
            .query_map(params![from_ms, to_ms], |r| {
                Ok(TaskLine {
                    task_id: r.get(0)?,
                    task_type: r.get(1)?,
                    run_id: r.get(2)?,
                    tokens: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    usd: r.get(4)?,
                })
            })
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        let mut statement = self
            .conn()
            .prepare_cached(
                "SELECT run_id, agent, ended_ms, result, failure_class, error_summary FROM runs
                 WHERE result IS NOT NULL AND result != 'success' AND ended_ms >= ?1 AND ended_ms < ?2
                 ORDER BY ended_ms DESC LIMIT 50",
            )
            .map_err(read)?;
        let failures: Vec<FailureLine> = statement
            .query_map(params![from_ms, to_ms], |r| {
                Ok(FailureLine {
                    run_id: r.get(0)?,
                    agent: r.get(1)?,
                    ended: r.get::<_, Option<i64>>(2)?.map(iso),
                    result: r.get(3)?,
                    failure_class: r.get(4)?,
                    error_summary: r.get(5)?,
                })
            })
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        Ok((top_tasks, failures))
    }

    /// The report for [from_ms, to_ms), from the store alone (any window).
    pub fn report(
        &self,
        from_ms: i64,
        to_ms: i64,
        budgets: Vec<BudgetStatus>,
    ) -> Result<Report, StoreError> {
        let read = StoreError::Read;
        let lines = "SELECT day, agent, model, SUM(tokens) AS tokens, SUM(usd) AS usd FROM (
                    SELECT strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch') AS day, agent, model,
                           input_tokens + output_tokens AS tokens, COALESCE(cost_usd, 0) AS usd
                    FROM events WHERE type = 'llm_usage' AND ts_ms >= ?1 AND ts_ms < ?2
                    UNION ALL
                    SELECT day, agent, model, input_tokens + output_tokens, cost_usd FROM usage_rollups
                    WHERE CAST(strftime('%s', day) AS INTEGER) * 1000 >= ?1 AND CAST(strftime('%s', day) AS INTEGER) * 1000 < ?2
                 ) GROUP BY day, agent, model";
        let (count, total_tokens, total_usd): (i64, i64, f64) = self
            .conn()
            .query_row(
                &format!("SELECT COUNT(*), COALESCE(SUM(tokens), 0), COALESCE(SUM(usd), 0.0) + 0.0 FROM ({lines})"),
                params![from_ms, to_ms],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(read)?;
        let mut statement = self
            .conn()
            .prepare(&format!(
                "{lines} ORDER BY usd DESC, tokens DESC, day, agent, model LIMIT {MAX_SPEND_LINES}"
            ))
            .map_err(read)?;
        let mut spend: Vec<SpendLine> = statement
            .query_map(params![from_ms, to_ms], spend_line)
            .map_err(read)?
            .collect::<Result<_, _>>()
            .map_err(read)?;
        spend.sort_by(|a, b| (&a.day, &a.agent, &a.model).cmp(&(&b.day, &b.agent, &b.model)));
        let total_tokens = u64::try_from(total_tokens).unwrap_or(0);
        let spend_omitted = Omitted::of(
            usize::try_from(count).unwrap_or(0),
            total_tokens,
            total_usd,
            &spend,
        );
        let (top_tasks, failures) = self.report_details(from_ms, to_ms)?;
        Ok(Report {
            from: iso(from_ms),
            to: iso(to_ms),
            // `+ 0.0` in SQL: SUM over nothing must not come back as -0.0.
            total_usd,
            total_tokens,
            spend,
            spend_omitted,
            top_tasks,
            budgets,
            failures,
            cost_confidence: self.cost_confidence(from_ms, to_ms)?,
        })
    }
}

impl Report {
    /// The report as Markdown, for people and for the weekly file.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# costmeter cost report\n\n{} to {}\n\nTotal: **${:.4}** for {} tokens.\n\n## Spend by day, agent and model\n\n| day | agent | model | tokens | USD |\n| --- | --- | --- | ---: | ---: |\n",
            self.from, self.to, self.total_usd, self.total_tokens
        );
        for s in &self.spend {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.4} |\n",
                s.day,
                cell(&s.agent),
                cell(&s.model),
                s.tokens,
                s.usd
            ));
        }
        if let Some(omitted) = &self.spend_omitted {
            md.push_str(&format!(
                "| and {} more lines | | | {} | {:.4} |\n",
                omitted.lines, omitted.tokens, omitted.usd
            ));
        }
        md.push_str("\n## How the USD was obtained\n\n| confidence | events | USD |\n| --- | ---: | ---: |\n");
        for c in &self.cost_confidence {
            md.push_str(&format!(
                "| {} | {} | {:.4} |\n",
                c.confidence, c.events, c.usd
            ));
        }
        md.push_str("\n## Costliest tasks\n\n| task | type | run | tokens | USD |\n| --- | --- | --- | ---: | ---: |\n");
        for t in &self.top_tasks {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {:.4} |\n",
                cell(&t.task_id),
                cell(t.task_type.as_deref().unwrap_or("-")),
                cell(t.run_id.as_deref().unwrap_or("-")),
                t.tokens,
                t.usd
            ));
        }
        md.push_str("\n## Budgets\n\n| budget | resource | used | limit | state | window |\n| --- | --- | ---: | ---: | --- | --- |\n");
        for b in &self.budgets {
            md.push_str(&format!(
                "| {} | {} | {:.4} | {} | {} | {} |\n",
                cell(&b.name),
                b.resource.label(),
                b.used,
                b.limit,
                b.state.label(),
                b.window
            ));
        }
        md.push_str("\n## Failed runs\n\n| run | agent | ended | result | class | summary |\n| --- | --- | --- | --- | --- | --- |\n");
        for f in &self.failures {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                cell(&f.run_id),
                cell(f.agent.as_deref().unwrap_or("-")),
                f.ended.as_deref().unwrap_or("-"),
                cell(&f.result),
                cell(f.failure_class.as_deref().unwrap_or("-")),
                cell(f.error_summary.as_deref().unwrap_or("-"))
            ));
        }
        md
    }
}

/// Text for one Markdown table cell: control characters (newlines, escapes) become spaces and
/// `|` is escaped, so nothing an agent reports can break the table or reach a terminal raw.
pub fn cell(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace('|', "\\|")
}

/// `cost_report_<ISO year>-W<week>.md` for the week containing `ms`.
pub fn file_name(ms: i64) -> String {
    let date = jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date())
        .unwrap_or_default();
    let week = date.iso_week_date();
    format!("cost_report_{}-W{:02}.md", week.year(), week.week())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_carry_no_control_characters_or_pipes() {
        assert_eq!(
            cell("tests\n\x1b[31mfailed | badly"),
            "tests  [31mfailed \\| badly"
        );
    }

    #[test]
    fn weekly_file_names_follow_iso_weeks() {
        // 2026-11-23 is the Monday of ISO week 48; 2027-01-01 is in week 53 of 2026.
        assert_eq!(file_name(1_795_428_000_000), "cost_report_2026-W48.md");
        assert_eq!(file_name(1_798_761_600_000), "cost_report_2026-W53.md");
    }
}

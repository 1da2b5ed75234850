//! What each client verb asks the daemon, and how its answer is drawn as a table.

use comfy_table::Cell;
use serde::de::DeserializeOwned;

use super::{Client, ClientError, Format, bar, maybe, number, state_cell, table, text, text_or};
use crate::report::Report;
use crate::runs::{RunDetail, RunPage};
use crate::wire::{BudgetList, PricingStatus, Status};

/// What a client verb asks.
#[derive(Debug, Clone)]
pub enum Verb {
    Status,
    Budgets,
    Runs { query: String },
    RunShow { id: String },
    Report { window: String, markdown: bool },
    PricingStatus,
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The query string of `GET /v1/runs` from the verb's flags.
pub fn runs_query(
    status: Option<&str>,
    agent: Option<&str>,
    since: Option<&str>,
    limit: Option<usize>,
) -> String {
    let mut parts = Vec::new();
    for (key, value) in [("status", status), ("agent", agent), ("since", since)] {
        if let Some(value) = value {
            parts.push(format!("{key}={}", encode(value)));
        }
    }
    if let Some(limit) = limit {
        parts.push(format!("limit={limit}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// The answer at `path` as JSON for `--format json` (the API's own text, pretty), or drawn
/// by `draw` from its typed shape. Both read it as `T` first, so a daemon answering in
/// another shape is an error either way.
fn show<T: DeserializeOwned>(
    client: &Client,
    path: &str,
    format: Format,
    draw: fn(&T) -> String,
) -> Result<String, ClientError> {
    let body = client.get_text(path)?;
    let typed: T = serde_json::from_str(&body).map_err(|e| ClientError::Refused {
        url: format!("{}{path}", client.base),
        status: 200,
        message: format!("not the answer this costmeter expects: {e}"),
    })?;
    Ok(match format {
        Format::Json => serde_json::from_str::<serde_json::Value>(&body)
            .and_then(|value| serde_json::to_string_pretty(&value))
            .unwrap_or(body),
        Format::Table => draw(&typed),
    })
}

impl Verb {
    pub(super) fn execute(self, client: &Client, format: Format) -> Result<String, ClientError> {
        match self {
            Verb::Status => show(client, "/v1/status", format, status_table),
            Verb::Budgets => show(client, "/v1/budgets", format, budgets_table),
            Verb::Runs { query } => show(client, &format!("/v1/runs{query}"), format, runs_table),
            Verb::RunShow { id } => show(
                client,
                &format!("/v1/runs/{}", encode(&id)),
                format,
                run_detail,
            ),
            Verb::Report {
                window,
                markdown: true,
            } => client.get_text(&format!("/v1/report?window={}&format=md", encode(&window))),
            Verb::Report { window, .. } => show(
                client,
                &format!("/v1/report?window={}&format=json", encode(&window)),
                format,
                report_table,
            ),
            Verb::PricingStatus => show(client, "/v1/pricing/status", format, pricing_table),
        }
    }
}

fn status_table(status: &Status) -> String {
    let mut out = format!(
        "costmeter {}  up {:.0}s  {}\n",
        text(&status.version),
        status.uptime_seconds,
        if status.ready { "ready" } else { "NOT READY" }
    );
    let mut spend = table(&["spend", "USD", "tokens"]);
    for (label, window) in [
        ("last 24 hours", status.spend.last_24h),
        ("last 7 days", status.spend.last_7d),
    ] {
        spend.add_row(vec![
            Cell::new(label),
            Cell::new(number(window.usd)),
            Cell::new(window.tokens),
        ]);
    }
    out.push_str(&format!("{spend}\n"));
    if !status.budgets.is_empty() {
        let mut at_a_glance = table(&["budget", "used / limit", "state"]);
        for b in &status.budgets {
            at_a_glance.add_row(vec![
                Cell::new(text(&b.name)),
                Cell::new(bar(b.ratio)),
                state_cell(b.state.label()),
            ]);
        }
        out.push_str(&format!("{at_a_glance}\n"));
    }
    for check in status.checks.iter().filter(|c| !c.ok) {
        out.push_str(&format!(
            "not ready: {}: {}\n",
            text(&check.name),
            text(&check.detail)
        ));
    }
    for hint in &status.hints {
        out.push_str(&format!("hint: {}\n", text(hint)));
    }
    out
}

fn budgets_table(list: &BudgetList) -> String {
    if list.budgets.is_empty() {
        return "no budgets configured\n".into();
    }
    let mut t = table(&["budget", "resource", "used / limit", "state", "window end"]);
    for b in &list.budgets {
        t.add_row(vec![
            Cell::new(text(&b.name)),
            Cell::new(b.resource.label()),
            Cell::new(format!(
                "{}\n{} / {}",
                bar(b.ratio),
                number(b.used),
                number(b.limit)
            )),
            state_cell(b.state.label()),
            Cell::new(text(b.window_end.as_deref().unwrap_or(&b.window))),
        ]);
    }
    format!("{t}\n")
}

fn runs_table(page: &RunPage) -> String {
    if page.runs.is_empty() {
        return "no runs match\n".into();
    }
    let mut t = table(&["run", "agent", "status", "ended", "why"]);
    for r in &page.runs {
        let why = match (&r.failure_class, &r.error_summary) {
            (Some(class), Some(summary)) => format!("{}: {}", text(class), text(summary)),
            (Some(class), None) => text(class),
            (None, Some(summary)) => text(summary),
            (None, None) => String::new(),
        };
        t.add_row(vec![
            Cell::new(text(&r.id)),
            Cell::new(text_or(r.agent.as_deref())),
            state_cell(&r.status),
            Cell::new(text_or(r.ended.as_deref())),
            Cell::new(why),
        ]);
    }
    format!("{t}\n")
}

fn run_detail(detail: &RunDetail) -> String {
    let run = &detail.run;
    let mut out = format!(
        "run {}  agent {}  {}  {} s\n",
        text(&run.id),
        text_or(run.agent.as_deref()),
        text(&run.status),
        maybe(run.duration_seconds)
    );
    if let Some(summary) = &run.error_summary {
        out.push_str(&format!(
            "failed ({}): {}\n",
            text_or(run.failure_class.as_deref()),
            text(summary)
        ));
    }
    let mut t = table(&["task", "type", "status", "s", "CPU s", "tokens", "USD"]);
    for task in &detail.task_list {
        let record = &task.cost_record;
        t.add_row(vec![
            Cell::new(text(&task.id)),
            Cell::new(text_or(task.task_type.as_deref())),
            state_cell(&task.status),
            Cell::new(maybe(task.duration_seconds)),
            Cell::new(number(record.cpu_seconds)),
            Cell::new(record.tokens),
            Cell::new(number(record.usd)),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    out
}

fn report_table(report: &Report) -> String {
    let mut out = format!(
        "{} to {}: ${} for {} tokens\n",
        text(&report.from),
        text(&report.to),
        number(report.total_usd),
        report.total_tokens
    );
    let mut t = table(&["day", "agent", "model", "tokens", "USD"]);
    for s in &report.spend {
        t.add_row(vec![
            Cell::new(text(&s.day)),
            Cell::new(text(&s.agent)),
            Cell::new(text(&s.model)),
            Cell::new(s.tokens),
            Cell::new(number(s.usd)),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    out
}

fn pricing_table(pricing: &PricingStatus) -> String {
    let mut out = format!(
        "baseline {} (prices taken {}), manifest {}\n",
        text(&pricing.baseline_version),
        text(&pricing.baseline_taken),
        text_or(pricing.manifest.as_deref())
    );
    let mut models = table(&["source", "models"]);
    for (source, count) in &pricing.models {
        models.add_row(vec![Cell::new(text(source)), Cell::new(count)]);
    }
    out.push_str(&format!("{models}\n"));
    for row in &pricing.rejected_rows {
        out.push_str(&format!(
            "rejected {} ({}): {}\n",
            text(&row.model),
            row.source.label(),
            text(&row.reason)
        ));
    }
    if !pricing.unknown_models.is_empty() {
        let mut t = table(&["unknown model (priced at 0)", "events", "tokens"]);
        for u in &pricing.unknown_models {
            t.add_row(vec![
                Cell::new(text(&u.model)),
                Cell::new(u.events),
                Cell::new(u.tokens),
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_filters_are_percent_encoded() {
        assert_eq!(
            runs_query(Some("failed"), Some("a b"), None, Some(5)),
            "?status=failed&agent=a%20b&limit=5"
        );
        assert_eq!(runs_query(None, None, None, None), "");
    }
}

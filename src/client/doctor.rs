//! `costmeter doctor`: each finding green, yellow or red with its fix, from what the daemon
//! says about itself in `/v1/status` (never from parsing `/metrics` back).

use std::process::ExitCode;

use comfy_table::{Cell, Color};

use super::{Client, Format, colour, table, text};
use crate::wire::{Diagnosis, Finding, Status, Verdict};

/// Exit status of `costmeter doctor` when a check is red.
pub const EXIT_DOCTOR_RED: u8 = 3;

fn finding(
    name: &str,
    status: Verdict,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        name: name.to_string(),
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// Green when `hits` is empty, else yellow listing them.
fn listing(name: &str, hits: Vec<String>, green: &str, yellow: &str, fix: &str) -> Finding {
    if hits.is_empty() {
        finding(name, Verdict::Green, green, "")
    } else {
        finding(
            name,
            Verdict::Yellow,
            format!("{yellow}: {}", hits.join(", ")),
            fix,
        )
    }
}

/// The health check, from the daemon at `client`.
pub fn diagnose(client: &Client) -> Vec<Finding> {
    match client.get_as::<Status>("/v1/status") {
        Ok(status) => findings(&status, jiff::Timestamp::now().as_millisecond()),
        Err(error) => vec![finding(
            "daemon",
            Verdict::Red,
            error.to_string(),
            "start it with `costmeter run`, or pass --url",
        )],
    }
}

/// The findings a status gives at `now_ms` (this machine's clock, compared with the daemon's).
pub fn findings(status: &Status, now_ms: i64) -> Vec<Finding> {
    let mut findings = vec![finding(
        "daemon",
        Verdict::Green,
        format!("costmeter {} answers", text(&status.version)),
        "",
    )];
    for check in &status.checks {
        let fix = match check.name.as_str() {
            "store" => "free space or fix permissions of [store] path; costmeter retries by itself",
            "telemetry" => {
                "start the OTLP collector at [telemetry] otlp_endpoint, or set mode = \"dev_fast\""
            }
            "sampler" => "wait a sample interval; if it persists, see the daemon's log",
            "fleet" => {
                "start or reach the Redis at [fleet] redis_url (usage is kept here and pushed once it answers; admissions follow on_fleet_unavailable)"
            }
            _ => "see the daemon's log",
        };
        findings.push(if check.ok {
            finding(&check.name, Verdict::Green, text(&check.detail), "")
        } else {
            finding(&check.name, Verdict::Red, text(&check.detail), fix)
        });
    }
    for problem in &status.problems {
        findings.push(finding(
            &problem.name,
            Verdict::Red,
            text(&problem.detail),
            text(&problem.fix),
        ));
    }
    let attention = &status.attention;
    findings.push(listing(
        "targets",
        attention.targets_down.iter().map(|t| text(t)).collect(),
        "every target is found",
        "not found",
        "check the [[target]] selectors (pid, pid_file, match, cgroup)",
    ));
    findings.push(listing(
        "telemetry",
        attention.silent_targets.iter().map(|t| text(t)).collect(),
        "no target is busy without usage arriving",
        "busy with no usage arriving for their silent_after",
        "point the agent's exporter or base URL at costmeter (costmeter setup AGENT prints how); if it uses no LLM, set silent_after = \"0s\" on its [[target]]",
    ));
    findings.push(listing(
        "pricing",
        attention
            .unpriced_models
            .iter()
            .map(|m| format!("{} ({} events)", text(&m.name), m.count))
            .collect(),
        "every model reported has a price",
        "priced at 0",
        "add [pricing.models.\"NAME\"] or a [pricing] manifest",
    ));
    findings.push(listing(
        "cardinality",
        attention
            .folded_labels
            .iter()
            .map(|l| format!("{} ({} folded)", text(&l.name), l.count))
            .collect(),
        "no label value folded into __other__",
        "folded into __other__",
        "raise [metrics] max_label_values or send fewer distinct names",
    ));
    let skew = status
        .now
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|daemon| (now_ms - daemon.as_millisecond()).abs() as f64 / 1000.0);
    findings.push(match skew {
        Some(skew) if skew <= 5.0 => finding(
            "clock",
            Verdict::Green,
            format!("daemon and this machine agree within {skew:.1} s"),
            "",
        ),
        Some(skew) => finding(
            "clock",
            Verdict::Yellow,
            format!("the daemon's clock is {skew:.0} s off this machine's"),
            "sync both clocks (NTP): windows and reports depend on them",
        ),
        None => finding(
            "clock",
            Verdict::Yellow,
            "the daemon did not say its time",
            "upgrade costmeter",
        ),
    });
    findings.push(listing(
        "budget scopes",
        budget_scopes_idle(status),
        "every agent-scoped budget has seen its agent",
        "no usage from the agent of",
        "check the budget's agent name against what the agent reports",
    ));
    findings.push(cost_report(status, now_ms));
    findings
}

/// Agent-scoped budgets whose agent never reported usage: a misspelt name guards nothing.
fn budget_scopes_idle(status: &Status) -> Vec<String> {
    status
        .budgets
        .iter()
        .filter_map(|b| b.agent.as_deref().map(|agent| (b, agent)))
        .filter(|(_, agent)| !status.attention.agents_seen.iter().any(|a| a == agent))
        .map(|(b, agent)| format!("{} (agent {})", text(&b.name), text(agent)))
        .collect()
}

fn cost_report(status: &Status, now_ms: i64) -> Finding {
    let report = &status.report;
    let now_s = now_ms as f64 / 1000.0;
    let last = report
        .last_success
        .as_deref()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second() as f64);
    match (report.configured, report.last_error.as_deref(), last) {
        (false, ..) => finding(
            "cost report",
            Verdict::Green,
            "weekly reports are not configured",
            "",
        ),
        (true, Some(error), _) => finding(
            "cost report",
            Verdict::Red,
            format!("the last report was not written: {}", text(error)),
            "make [report] dir writable; see the daemon's log",
        ),
        (true, None, Some(at)) if now_s - at > 8.0 * 86_400.0 => finding(
            "cost report",
            Verdict::Red,
            format!("last written {:.0} days ago", (now_s - at) / 86_400.0),
            "see the daemon's log: reports should be written every [report] every",
        ),
        (true, None, Some(_)) => finding(
            "cost report",
            Verdict::Green,
            "written within the last 8 days",
            "",
        ),
        (true, None, None) => finding(
            "cost report",
            Verdict::Yellow,
            "configured, not written yet",
            "wait for the first batch of events or samples",
        ),
    }
}

/// `costmeter doctor`: prints the findings; exits 3 when any is red.
pub fn doctor(client: &Client, format: Format) -> ExitCode {
    let findings = diagnose(client);
    let red = findings.iter().any(|f| f.status == Verdict::Red);
    if format == Format::Json {
        let diagnosis = Diagnosis {
            healthy: !red,
            findings,
        };
        println!("{}", serde_json::to_string(&diagnosis).unwrap_or_default());
    } else {
        let mut t = table(&["check", "", "detail and fix"]);
        for f in &findings {
            let (mark, tint) = match f.status {
                Verdict::Green => ("ok", Color::Green),
                Verdict::Yellow => ("WARN", Color::Yellow),
                Verdict::Red => ("FAIL", Color::Red),
            };
            let mark = if colour() {
                Cell::new(mark).fg(tint)
            } else {
                Cell::new(mark)
            };
            let detail = if f.fix.is_empty() {
                f.detail.clone()
            } else {
                format!("{}\nfix: {}", f.detail, f.fix)
            };
            t.add_row(vec![Cell::new(&f.name), mark, Cell::new(detail)]);
        }
        println!("{t}");
    }
    if red {
        ExitCode::from(EXIT_DOCTOR_RED)
    } else {
        ExitCode::SUCCESS
    }
}

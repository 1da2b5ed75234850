//! The built-in status page at `/`: server-rendered HTML with inline SVG figures, no scripts,
//! no external assets; it refreshes itself and fits a phone. Read-only: it shows what the API
//! already answers, drawn ([`figures`]) and listed.

pub mod figures;
pub mod svg;

use crate::budget::BudgetStatus;
use crate::client::number;
use crate::report::Report;
use crate::runs::RunPage;
use crate::spend::SpendByHour;
use crate::store::ResourcePoint;
use crate::wire::Status;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;padding:1rem;background:#fafafa;color:#222}\
h1{font-size:1.3rem;margin:0 0 .5rem}h2{font-size:1.05rem;margin:1.2rem 0 .4rem}\
table{border-collapse:collapse;width:100%;background:#fff}td,th{padding:.3rem .5rem;border-bottom:1px solid #eee;text-align:left;font-size:.9rem}\
.bar{background:#e6e6e6;border-radius:3px;height:.8rem;min-width:6rem}.fill{height:100%;border-radius:3px}\
.ok .fill{background:#3a9d5d}.warning .fill{background:#e0a020}.exceeded .fill{background:#d0342c}\
.state-ok{color:#3a9d5d}.state-warning{color:#b07800}.state-exceeded,.state-failure,.state-timeout{color:#d0342c;font-weight:600}\
.muted{color:#777}@media (max-width:600px){td,th{font-size:.8rem;padding:.25rem}.wide{display:none}}\
figure{margin:.4rem 0 1rem;background:#fff;padding:.4rem}figcaption{font-size:.9rem;margin-bottom:.2rem}\
svg.figure{display:block;max-width:48rem;height:auto;font-size:11px}@media (max-width:600px){svg.figure{font-size:18px}}.grid{stroke:#e4e4e4}.axis{fill:#555}\
.used,.series{fill:none;stroke:#1f3b73;stroke-width:2}.projection{fill:none;stroke:#1f3b73;stroke-width:1.5;stroke-dasharray:5 4}\
.now{fill:#1f3b73}.point{fill:#1f3b73;opacity:.35}.limit{stroke:#d0342c;stroke-width:1.5}.limit-label{fill:#d0342c}\
.warn{stroke:#b07800;stroke-dasharray:2 3}.warn-label{fill:#b07800}.segment{stroke:#fff;stroke-width:.5}.value{fill:#333}\
.legend{font-size:.8rem;margin:.2rem 0}.legend span{margin-right:.8rem;white-space:nowrap}\
.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.25rem;vertical-align:-.1rem;border:1px solid #999}\
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.5rem}@media (max-width:600px){.pair{grid-template-columns:1fr}}\
.empty{background:#fff;padding:.6rem;color:#555}";

/// Most rows a table on the page shows; the rest are counted.
pub const PAGE_ROWS: usize = 20;

/// What the page shows: the `/v1/status`, `/v1/budgets` and `/v1/report` (7 days and 24
/// hours) answers, the recent runs, (target, up, CPU seconds, RSS bytes) of each target, and
/// for the figures the hourly spend rollup and the last hour of resource samples.
pub struct Sections<'a> {
    pub status: &'a Status,
    pub budgets: &'a [BudgetStatus],
    pub week: &'a Report,
    pub day: &'a Report,
    pub runs: &'a RunPage,
    pub targets: &'a [(String, f64, f64, f64)],
    pub spend: &'a SpendByHour,
    pub samples: &'a [ResourcePoint],
    pub now_ms: i64,
}

/// Where the page sends someone who sees no usage.
const NO_USAGE: &str = "Point the agent at costmeter: <code>costmeter setup claude-code</code> (or codex, gemini-cli, opencode, otel) prints the settings; or POST llm_usage events to /v1/events (README, \"Reporting usage\").";

fn empty(html: &mut String, id: &str, text: &str) {
    html.push_str(&format!("<p class=\"empty\" id=\"{id}\">{text}</p>"));
}

/// Renders the page.
pub fn render(sections: &Sections<'_>) -> String {
    let Sections {
        status,
        budgets,
        week,
        day,
        runs,
        targets,
        spend,
        samples,
        now_ms,
    } = sections;
    let now_ms = *now_ms;
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"10\"><title>costmeter</title><style>{STYLE}</style></head><body>\
<h1>costmeter {}</h1><p class=\"muted\">{} · up {:.0} s · <a href=\"/metrics\">/metrics</a></p>",
        escape(&status.version),
        if status.ready { "ready" } else { "NOT READY" },
        status.uptime_seconds
    );
    html.push_str("<h2>Budgets</h2><table id=\"budgets\"><tr><th>budget</th><th>used / limit</th><th></th><th>state</th></tr>");
    if budgets.is_empty() {
        html.push_str("<tr><td colspan=\"4\" class=\"muted\">no budgets configured</td></tr>");
    }
    for b in budgets.iter() {
        let state = b.state.label();
        let percent = (b.ratio * 100.0).clamp(0.0, 100.0);
        html.push_str(&format!(
            "<tr class=\"budget\" data-budget=\"{name}\" data-state=\"{state}\"><td>{name}<br><span class=\"muted\">{resource} · {window}</span></td>\
<td>{used} / {limit}</td><td><div class=\"bar {state}\"><div class=\"fill\" style=\"width:{percent:.0}%\"></div></div></td>\
<td class=\"state-{state}\">{state}</td></tr>",
            name = escape(&b.name),
            resource = b.resource.label(),
            window = escape(&b.window),
            used = number(b.used),
            limit = number(b.limit),
        ));
    }
    html.push_str("</table>");
    if budgets.is_empty() {
        empty(
            &mut html,
            "no-budgets",
            "No budgets to draw: add a <code>[[budget]]</code> table (name, resource, limit, window) to the config to warn at 90 % and stop at the limit.",
        );
    } else {
        html.push_str("<h2>Budgets over their windows</h2>");
        html.push_str(&figures::burn_downs(budgets, spend, samples, now_ms));
    }
    for (title, id, report, period, columns) in [
        (
            "Spend in the last 24 hours",
            "spend-24h",
            day,
            3_600_000,
            24,
        ),
        ("Spend in the last 7 days", "spend-7d", week, 86_400_000, 7),
    ] {
        html.push_str(&format!("<h2>{title}: ${}</h2>", number(report.total_usd)));
        let label = format!(
            "{title} by agent, USD per {}",
            if columns == 24 {
                "hour (UTC)"
            } else {
                "day (UTC)"
            }
        );
        match figures::spend_by_agent(spend, now_ms, period, columns, id, &label) {
            Some(figure) => html.push_str(&format!("<figure>{figure}</figure>")),
            None => empty(
                &mut html,
                &format!("{id}-empty"),
                &format!("No LLM usage in this window. {NO_USAGE}"),
            ),
        }
        html.push_str("<table><tr><th>agent</th><th>model</th><th>tokens</th><th>USD</th></tr>");
        // Days folded into (agent, model) pairs, linear in the lines; the costliest shown.
        let mut by_pair: std::collections::HashMap<(&str, &str), (u64, f64)> =
            std::collections::HashMap::new();
        for line in &report.spend {
            let pair = by_pair
                .entry((line.agent.as_str(), line.model.as_str()))
                .or_default();
            pair.0 += line.tokens;
            pair.1 += line.usd;
        }
        let mut pairs: Vec<_> = by_pair.into_iter().collect();
        pairs.sort_by(|a, b| b.1.1.total_cmp(&a.1.1).then_with(|| a.0.cmp(&b.0)));
        for ((agent, model), (tokens, usd)) in pairs.iter().take(PAGE_ROWS) {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{tokens}</td><td>{usd:.4}</td></tr>",
                escape(agent),
                escape(model)
            ));
        }
        let hidden = pairs.len().saturating_sub(PAGE_ROWS) as u64
            + report.spend_omitted.as_ref().map_or(0, |o| o.lines);
        if hidden > 0 {
            html.push_str(&format!(
                "<tr><td colspan=\"4\" class=\"muted\">and {hidden} more lines (see GET /v1/report)</td></tr>"
            ));
        }
        if pairs.is_empty() {
            html.push_str("<tr><td colspan=\"4\" class=\"muted\">no usage reported</td></tr>");
        }
        html.push_str("</table>");
    }
    html.push_str("<h2>Tokens by kind</h2>");
    match figures::tokens_by_kind(spend, now_ms) {
        Some(figure) => html.push_str(&format!("<figure>{figure}</figure>")),
        None => empty(
            &mut html,
            "tokens-empty",
            &format!("No tokens reported in the last 7 days. {NO_USAGE}"),
        ),
    }
    html.push_str("<h2>Targets</h2>");
    let names: Vec<String> = targets.iter().map(|t| t.0.clone()).collect();
    match figures::targets(&names, samples, budgets, now_ms) {
        Some(figure) => html.push_str(&figure),
        None => empty(
            &mut html,
            "targets-empty",
            "No resource samples in the last hour: name the agent's processes in a <code>[[target]]</code> table, or start the agent under <code>costmeter exec -- …</code>.",
        ),
    }
    html.push_str("<table><tr><th>target</th><th>up</th><th>CPU s</th><th>memory MiB</th></tr>");
    for (target, up, cpu, rss) in targets.iter() {
        html.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{cpu:.1}</td><td>{:.1}</td></tr>",
            escape(target),
            if *up > 0.0 { "yes" } else { "no" },
            rss / 1048576.0
        ));
    }
    html.push_str("</table><h2>Recent runs</h2><table><tr><th>run</th><th>status</th><th class=\"wide\">ended</th><th>why</th></tr>");
    for r in &runs.runs {
        let why = [r.failure_class.as_deref(), r.error_summary.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        html.push_str(&format!(
            "<tr><td>{}</td><td class=\"state-{status}\">{status}</td><td class=\"wide\">{}</td><td>{}</td></tr>",
            escape(&r.id),
            escape(r.ended.as_deref().unwrap_or("-")),
            escape(&why),
            status = escape(&r.status),
        ));
    }
    html.push_str("</table></body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_shown_is_escaped() {
        assert_eq!(
            escape("<b a=\"x\">&'"),
            "&lt;b a=&quot;x&quot;&gt;&amp;&#39;"
        );
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": "<v>", "now": "", "started": "", "uptime_seconds": 1.0, "ready": true,
            "checks": [], "problems": [],
            "spend": {"last_24h": {"usd": 0.0, "tokens": 0}, "last_7d": {"usd": 0.0, "tokens": 0}},
            "budgets": [], "targets": [],
            "report": {"configured": false, "last_success": null, "last_error": null},
            "attention": {"targets_down": [], "unpriced_models": [], "folded_labels": [], "agents_seen": []},
            "hints": []
        }))
        .expect("a status");
        let report = Report::assemble(0, 0, Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let runs = RunPage {
            runs: Vec::new(),
            next_cursor: None,
        };
        let mut budget = BudgetStatus::sample("<script>", None, 9.5);
        budget.window = "<w>".into();
        let html = render(&Sections {
            status: &status,
            budgets: &[budget],
            week: &report,
            day: &report,
            runs: &runs,
            targets: &[("<t>".into(), 1.0, 0.0, 0.0)],
            spend: &SpendByHour::default(),
            samples: &[],
            now_ms: 1_795_428_000_000,
        });
        for raw in ["<script>", "<v>", "<w>", "<t>"] {
            assert!(!html.contains(raw), "{raw} is escaped");
        }
        assert!(html.contains("&lt;script&gt;") && html.contains("data-state=\"warning\""));
    }
}

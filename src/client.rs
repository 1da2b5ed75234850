//! Client verbs: `status`, `budgets`, `runs`, `report`, `pricing status`. They talk to a running
//! daemon over its HTTP API, never to the store. `--format json` prints the API's JSON as it
//! is (stable, documented in README, no colour); `table` fits an 80-column terminal and uses
//! colour only on a terminal without `NO_COLOR`.

use std::io::IsTerminal;
use std::process::ExitCode;

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{Cell, Color, ContentArrangement, Table};
use serde_json::Value;

/// Exit status when the daemon cannot be reached or answers with an error.
pub const EXIT_UNREACHABLE: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach costmeter at {url}: {reason} (is `costmeter run` up? pass --url)")]
    Unreachable { url: String, reason: String },
    #[error("costmeter answered {status} for {url}: {message}")]
    Refused {
        url: String,
        status: u16,
        message: String,
    },
}

/// A small HTTP client for one daemon.
pub struct Client {
    base: String,
    http: ureq::Agent,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(std::time::Duration::from_secs(30)))
                .build()
                .into(),
        }
    }

    /// GETs a path; the body as text, or why not. On a terminal, a request that takes a
    /// while shows how long it has been waiting.
    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let _progress = Progress::start();
        let url = format!("{}{}", self.base, path);
        let mut response = self
            .http
            .get(&url)
            .call()
            .map_err(|e| ClientError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        if status >= 400 && status != 429 {
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(ClientError::Refused {
                url,
                status,
                message,
            });
        }
        Ok(body)
    }

    /// POSTs one event; the daemon's answer.
    pub fn post_event(&self, event: &Value, token: Option<&str>) -> Result<Value, ClientError> {
        let url = format!("{}/v1/events", self.base);
        let mut request = self
            .http
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut response =
            request
                .send(event.to_string())
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status == 202 {
            return Ok(answer);
        }
        let message = answer["rejected"][0]["error"]
            .as_str()
            .or_else(|| answer["error"].as_str())
            .unwrap_or(&body)
            .to_string();
        Err(ClientError::Refused {
            url,
            status,
            message,
        })
    }

    pub fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let text = self.get_text(path)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Refused {
            url: format!("{}{}", self.base, path),
            status: 200,
            message: format!("not JSON: {e}"),
        })
    }
}

/// Elapsed-time progress on stderr while a request is slow; only on a terminal, removed when
/// dropped.
struct Progress {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// How long a request may take before progress shows.
    const AFTER: std::time::Duration = std::time::Duration::from_millis(300);

    fn start() -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                stop: None,
                thread: None,
            };
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            use std::io::Write;
            let started = std::time::Instant::now();
            if stopped.recv_timeout(Self::AFTER).is_ok() {
                return;
            }
            loop {
                eprint!(
                    "\rwaiting for costmeter… {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
                match stopped.recv_timeout(std::time::Duration::from_millis(100)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
            }
            eprint!("\r{:40}\r", "");
        });
        Progress {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(80)
        .set_header(header.iter().map(Cell::new));
    if !colour() {
        table.force_no_tty();
    }
    table
}

fn state_cell(state: &str) -> Cell {
    let cell = Cell::new(state);
    if !colour() {
        return cell;
    }
    match state {
        "exceeded" | "failure" | "timeout" => cell.fg(Color::Red),
        "warning" | "cancelled" => cell.fg(Color::Yellow),
        "ok" | "success" => cell.fg(Color::Green),
        _ => cell,
    }
}

/// A JSON number for people: whole numbers without decimals, others to four places.
pub(crate) fn number(value: &Value) -> String {
    match value.as_f64() {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{}", v as i64),
        Some(v) => format!("{v:.4}"),
        None => "-".into(),
    }
}

/// A bar of 20 cells for a ratio: used / limit.
fn bar(ratio: f64) -> String {
    let filled = ((ratio.clamp(0.0, 1.0)) * 20.0).round() as usize;
    format!(
        "{}{} {:>4.0}%",
        "#".repeat(filled),
        ".".repeat(20 - filled),
        ratio * 100.0
    )
}

/// A string field for a terminal table: control characters (escape sequences, newlines an
/// agent put in an error summary) become spaces, so nothing reported can drive the terminal.
fn text(value: &Value) -> String {
    value.as_str().map_or_else(
        || "-".to_string(),
        |s| {
            s.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        },
    )
}

/// Runs one verb: prints its answer and returns the exit status.
pub fn run(client: &Client, verb: Verb, format: Format) -> ExitCode {
    match verb.execute(client, format) {
        Ok(output) => {
            print!("{output}");
            if !output.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("costmeter: {error}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// `costmeter emit`: posts the event and prints the daemon's answer.
pub fn emit(client: &Client, event: &Value, token: Option<&str>, format: Format) -> ExitCode {
    match client.post_event(event, token) {
        Ok(answer) => {
            match format {
                Format::Json => println!("{answer}"),
                Format::Table if answer["duplicates"] == 1 => {
                    println!("duplicate: already recorded, nothing changed")
                }
                Format::Table => println!("accepted"),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("costmeter: {error}");
            ExitCode::from(EXIT_UNREACHABLE)
        }
    }
}

/// One finding of `costmeter doctor`.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct Finding {
    pub name: String,
    /// green, yellow or red.
    pub status: &'static str,
    pub detail: String,
    /// What to do, in one line; empty when green.
    pub fix: String,
}

fn finding(
    name: &str,
    status: &'static str,
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

/// Values of one label of one series in a Prometheus text scrape, with their sample values.
fn series_values(metrics: &str, series: &str, label: &str) -> Vec<(String, f64)> {
    let needle = format!("{label}=\"");
    metrics
        .lines()
        .filter(|line| line.starts_with(series) && line[series.len()..].starts_with('{'))
        .filter_map(|line| {
            let start = line.find(&needle)? + needle.len();
            let end = start + line[start..].find('"')?;
            let value = line.rsplit(' ').next()?.parse().ok()?;
            Some((line[start..end].to_string(), value))
        })
        .collect()
}

/// A doctor check that looks for label values of one series: each value `keep` accepts is a
/// yellow finding.
struct LabelScan {
    name: &'static str,
    series: &'static str,
    label: &'static str,
    keep: fn(f64) -> bool,
    /// What the sample value counts, shown beside the label value; empty to show none.
    unit: &'static str,
    green: &'static str,
    yellow: &'static str,
    fix: &'static str,
}

/// The health check: each finding green, yellow or red with its fix.
pub fn diagnose(client: &Client, namespace: &str) -> Vec<Finding> {
    let status = match client.get_json("/v1/status") {
        Ok(status) => status,
        Err(error) => {
            return vec![finding(
                "daemon",
                "red",
                error.to_string(),
                "start it with `costmeter run`, or pass --url",
            )];
        }
    };
    let mut findings = vec![finding(
        "daemon",
        "green",
        format!("costmeter {} answers", text(&status["version"])),
        "",
    )];
    for check in status["checks"].as_array().into_iter().flatten() {
        let name = check["name"].as_str().unwrap_or("check");
        let fix = match name {
            "store" => "free space or fix permissions of [store] path; costmeter retries by itself",
            "telemetry" => {
                "start the OTLP collector at [telemetry] otlp_endpoint, or set mode = \"dev_fast\""
            }
            "sampler" => "wait a sample interval; if it persists, see the daemon's log",
            _ => "see the daemon's log",
        };
        let ok = check["ok"] == true;
        findings.push(finding(
            name,
            if ok { "green" } else { "red" },
            text(&check["detail"]),
            if ok { "" } else { fix },
        ));
    }
    for problem in status["problems"].as_array().into_iter().flatten() {
        findings.push(finding(
            problem["name"].as_str().unwrap_or("problem"),
            "red",
            text(&problem["detail"]),
            text(&problem["fix"]),
        ));
    }
    let metrics = client.get_text("/metrics").unwrap_or_default();
    let scans = [
        LabelScan {
            name: "targets",
            series: "target_up",
            label: "target",
            keep: |up| up == 0.0,
            unit: "",
            green: "every target is found",
            yellow: "not found",
            fix: "check the [[target]] selectors (pid, pid_file, match, cgroup)",
        },
        LabelScan {
            name: "pricing",
            series: "unknown_model_events_total",
            label: "model",
            keep: |n| n > 0.0,
            unit: "events",
            green: "every model reported has a price",
            yellow: "priced at 0",
            fix: "add [pricing.models.\"NAME\"] or a [pricing] manifest",
        },
        LabelScan {
            name: "cardinality",
            series: "label_values_overflow_total",
            label: "label",
            keep: |n| n > 0.0,
            unit: "folded",
            green: "no label value folded into __other__",
            yellow: "folded into __other__",
            fix: "raise [metrics] max_label_values or send fewer distinct names",
        },
    ];
    for LabelScan {
        name,
        series,
        label,
        keep,
        unit,
        green,
        yellow,
        fix,
    } in scans
    {
        let hits: Vec<String> = series_values(&metrics, &format!("{namespace}_{series}"), label)
            .into_iter()
            .filter(|(_, value)| keep(*value))
            .map(|(value_label, value)| {
                if unit.is_empty() {
                    value_label
                } else {
                    format!("{value_label} ({value} {unit})")
                }
            })
            .collect();
        findings.push(if hits.is_empty() {
            finding(name, "green", green, "")
        } else {
            finding(
                name,
                "yellow",
                format!("{yellow}: {}", hits.join(", ")),
                fix,
            )
        });
    }
    let skew = status["now"]
        .as_str()
        .and_then(|now| now.parse::<jiff::Timestamp>().ok())
        .map(|now| {
            (jiff::Timestamp::now().as_millisecond() - now.as_millisecond()).abs() as f64 / 1000.0
        });
    findings.push(match skew {
        Some(skew) if skew <= 5.0 => finding(
            "clock",
            "green",
            format!("daemon and this machine agree within {skew:.1} s"),
            "",
        ),
        Some(skew) => finding(
            "clock",
            "yellow",
            format!("the daemon's clock is {skew:.0} s off this machine's"),
            "sync both clocks (NTP): windows and reports depend on them",
        ),
        None => finding(
            "clock",
            "yellow",
            "the daemon did not say its time",
            "upgrade costmeter",
        ),
    });
    let agents: Vec<String> =
        series_values(&metrics, &format!("{namespace}_usd_spend_total"), "agent")
            .into_iter()
            .map(|(a, _)| a)
            .collect();
    let budgets = client.get_json("/v1/budgets").unwrap_or(Value::Null);
    let idle: Vec<String> = budgets["budgets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            b["agent"]
                .as_str()
                .filter(|agent| !agents.iter().any(|a| a == agent))
                .map(|agent| format!("{} (agent {agent})", text(&b["name"])))
        })
        .collect();
    findings.push(if idle.is_empty() {
        finding(
            "budget scopes",
            "green",
            "every agent-scoped budget has seen its agent",
            "",
        )
    } else {
        finding(
            "budget scopes",
            "yellow",
            format!("no usage from the agent of: {}", idle.join(", ")),
            "check the budget's agent name against what the agent reports",
        )
    });
    let report = &status["report"];
    let now_s = jiff::Timestamp::now().as_second() as f64;
    let last = report["last_success"]
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second() as f64);
    findings.push(
        match (
            report["configured"] == true,
            report["last_error"].as_str(),
            last,
        ) {
            (false, ..) => finding(
                "cost report",
                "green",
                "weekly reports are not configured",
                "",
            ),
            (true, Some(error), _) => finding(
                "cost report",
                "red",
                format!("the last report was not written: {error}"),
                "make [report] dir writable; see the daemon's log",
            ),
            (true, None, Some(at)) if now_s - at > 8.0 * 86_400.0 => finding(
                "cost report",
                "red",
                format!("last written {:.0} days ago", (now_s - at) / 86_400.0),
                "see the daemon's log: reports should be written every [report] every",
            ),
            (true, None, Some(_)) => {
                finding("cost report", "green", "written within the last 8 days", "")
            }
            (true, None, None) => finding(
                "cost report",
                "yellow",
                "configured, not written yet",
                "wait for the first batch of events or samples",
            ),
        },
    );
    findings
}

/// `costmeter doctor`: prints the findings; exits 3 when any is red.
pub fn doctor(client: &Client, namespace: &str, format: Format) -> ExitCode {
    let findings = diagnose(client, namespace);
    let red = findings.iter().any(|f| f.status == "red");
    if format == Format::Json {
        println!(
            "{}",
            serde_json::json!({"healthy": !red, "findings": findings})
        );
    } else {
        let mut t = table(&["check", "", "detail and fix"]);
        for f in &findings {
            let mark = Cell::new(match f.status {
                "green" => "ok",
                "yellow" => "WARN",
                _ => "FAIL",
            });
            let mark = if colour() {
                mark.fg(match f.status {
                    "green" => Color::Green,
                    "yellow" => Color::Yellow,
                    _ => Color::Red,
                })
            } else {
                mark
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

/// Exit status of `costmeter doctor` when a check is red.
pub const EXIT_DOCTOR_RED: u8 = 3;

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

impl Verb {
    fn execute(self, client: &Client, format: Format) -> Result<String, ClientError> {
        let path = match &self {
            Verb::Status => "/v1/status".to_string(),
            Verb::Budgets => "/v1/budgets".to_string(),
            Verb::Runs { query } => format!("/v1/runs{query}"),
            Verb::RunShow { id } => format!("/v1/runs/{}", encode(id)),
            Verb::Report { window, markdown } => {
                format!(
                    "/v1/report?window={}&format={}",
                    encode(window),
                    if *markdown { "md" } else { "json" }
                )
            }
            Verb::PricingStatus => "/v1/pricing/status".to_string(),
        };
        if let Verb::Report { markdown: true, .. } = self {
            return client.get_text(&path);
        }
        let value = client.get_json(&path)?;
        if format == Format::Json {
            return Ok(serde_json::to_string_pretty(&value).unwrap_or_default());
        }
        Ok(match self {
            Verb::Status => status_table(&value),
            Verb::Budgets => budgets_table(&value["budgets"]),
            Verb::Runs { .. } => runs_table(&value["runs"]),
            Verb::RunShow { .. } => run_detail(&value),
            Verb::Report { .. } => report_table(&value),
            Verb::PricingStatus => pricing_table(&value),
        })
    }
}

fn status_table(status: &Value) -> String {
    let mut out = format!(
        "costmeter {}  up {:.0}s  {}\n",
        text(&status["version"]),
        status["uptime_seconds"].as_f64().unwrap_or(0.0),
        if status["ready"] == true {
            "ready"
        } else {
            "NOT READY"
        }
    );
    let mut spend = table(&["spend", "USD", "tokens"]);
    for (label, key) in [("last 24 hours", "last_24h"), ("last 7 days", "last_7d")] {
        spend.add_row(vec![
            Cell::new(label),
            Cell::new(number(&status["spend"][key]["usd"])),
            Cell::new(number(&status["spend"][key]["tokens"])),
        ]);
    }
    out.push_str(&format!("{spend}\n"));
    if let Some(budgets) = status["budgets"].as_array().filter(|b| !b.is_empty()) {
        let mut at_a_glance = table(&["budget", "used / limit", "state"]);
        for b in budgets {
            at_a_glance.add_row(vec![
                Cell::new(text(&b["name"])),
                Cell::new(bar(b["ratio"].as_f64().unwrap_or(0.0))),
                state_cell(b["state"].as_str().unwrap_or("-")),
            ]);
        }
        out.push_str(&format!("{at_a_glance}\n"));
    }
    for check in status["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ok"] != true)
    {
        out.push_str(&format!(
            "not ready: {}: {}\n",
            text(&check["name"]),
            text(&check["detail"])
        ));
    }
    for hint in status["hints"].as_array().into_iter().flatten() {
        out.push_str(&format!("hint: {}\n", text(hint)));
    }
    out
}

fn budgets_table(budgets: &Value) -> String {
    let mut t = table(&["budget", "resource", "used / limit", "state", "window end"]);
    for b in budgets.as_array().into_iter().flatten() {
        t.add_row(vec![
            Cell::new(text(&b["name"])),
            Cell::new(text(&b["resource"])),
            Cell::new(format!(
                "{}\n{} / {}",
                bar(b["ratio"].as_f64().unwrap_or(0.0)),
                number(&b["used"]),
                number(&b["limit"])
            )),
            state_cell(b["state"].as_str().unwrap_or("-")),
            Cell::new(
                b["window_end"]
                    .as_str()
                    .unwrap_or(b["window"].as_str().unwrap_or("-")),
            ),
        ]);
    }
    if budgets.as_array().is_none_or(Vec::is_empty) {
        return "no budgets configured\n".into();
    }
    format!("{t}\n")
}

fn runs_table(runs: &Value) -> String {
    let list = runs.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return "no runs match\n".into();
    }
    let mut t = table(&["run", "agent", "status", "ended", "why"]);
    for r in &list {
        let why = match (
            r["failure_class"].is_string(),
            r["error_summary"].is_string(),
        ) {
            (true, true) => format!(
                "{}: {}",
                text(&r["failure_class"]),
                text(&r["error_summary"])
            ),
            (true, false) => text(&r["failure_class"]),
            (false, true) => text(&r["error_summary"]),
            (false, false) => String::new(),
        };
        t.add_row(vec![
            Cell::new(text(&r["id"])),
            Cell::new(text(&r["agent"])),
            state_cell(r["status"].as_str().unwrap_or("-")),
            Cell::new(text(&r["ended"])),
            Cell::new(why),
        ]);
    }
    format!("{t}\n")
}

fn run_detail(run: &Value) -> String {
    let mut out = format!(
        "run {}  agent {}  {}  {} s\n",
        text(&run["id"]),
        text(&run["agent"]),
        text(&run["status"]),
        number(&run["duration_seconds"])
    );
    if run["error_summary"].is_string() {
        out.push_str(&format!(
            "failed ({}): {}\n",
            text(&run["failure_class"]),
            text(&run["error_summary"])
        ));
    }
    let mut t = table(&["task", "type", "status", "s", "CPU s", "tokens", "USD"]);
    for task in run["task_list"].as_array().into_iter().flatten() {
        let record = &task["cost_record"];
        t.add_row(vec![
            Cell::new(text(&task["id"])),
            Cell::new(text(&task["type"])),
            state_cell(task["status"].as_str().unwrap_or("-")),
            Cell::new(number(&task["duration_seconds"])),
            Cell::new(number(&record["cpu_seconds"])),
            Cell::new(number(&record["tokens"])),
            Cell::new(number(&record["usd"])),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    out
}

fn report_table(report: &Value) -> String {
    let mut out = format!(
        "{} to {}: ${} for {} tokens\n",
        text(&report["from"]),
        text(&report["to"]),
        number(&report["total_usd"]),
        number(&report["total_tokens"])
    );
    let mut t = table(&["day", "agent", "model", "tokens", "USD"]);
    for s in report["spend"].as_array().into_iter().flatten() {
        t.add_row(vec![
            Cell::new(text(&s["day"])),
            Cell::new(text(&s["agent"])),
            Cell::new(text(&s["model"])),
            Cell::new(number(&s["tokens"])),
            Cell::new(number(&s["usd"])),
        ]);
    }
    out.push_str(&format!("{t}\n"));
    out
}

fn pricing_table(pricing: &Value) -> String {
    let mut out = format!(
        "baseline {} (prices taken {}), manifest {}\n",
        text(&pricing["baseline_version"]),
        text(&pricing["baseline_taken"]),
        text(&pricing["manifest"])
    );
    let mut models = table(&["source", "models"]);
    if let Some(by_source) = pricing["models"].as_object() {
        for (source, count) in by_source {
            models.add_row(vec![Cell::new(source), Cell::new(number(count))]);
        }
    }
    out.push_str(&format!("{models}\n"));
    for row in pricing["rejected_rows"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "rejected {} ({}): {}\n",
            text(&row["model"]),
            text(&row["source"]),
            text(&row["reason"])
        ));
    }
    let unknown = pricing["unknown_models"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !unknown.is_empty() {
        let mut t = table(&["unknown model (priced at 0)", "events", "tokens"]);
        for u in &unknown {
            t.add_row(vec![
                Cell::new(text(&u["model"])),
                Cell::new(number(&u["events"])),
                Cell::new(number(&u["tokens"])),
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
    fn bars_fill_with_the_ratio_and_stop_at_the_limit() {
        assert_eq!(bar(0.5), "##########..........   50%");
        assert_eq!(bar(1.7), "####################  170%");
    }

    #[test]
    fn run_filters_are_percent_encoded() {
        assert_eq!(
            runs_query(Some("failed"), Some("a b"), None, Some(5)),
            "?status=failed&agent=a%20b&limit=5"
        );
        assert_eq!(runs_query(None, None, None, None), "");
    }
}

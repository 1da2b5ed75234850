//! `/metrics` as scrapers see it: both formats, the whole taxonomy, and `promtool`'s verdict.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::Daemon;

/// Every series of DESIGN.md's taxonomy, as named in the 0.0.4 text.
const TAXONOMY: &[&str] = &[
    "haios_task_total",
    "haios_task_duration_seconds",
    "haios_registry_lock_wait_seconds",
    "haios_tokens_total",
    "haios_usd_spend_total",
    "haios_cpu_seconds_total",
    "haios_memory_rss_bytes",
    "haios_memory_peak_rss_bytes",
    "haios_disk_read_bytes_total",
    "haios_disk_written_bytes_total",
    "haios_target_processes",
    "haios_target_up",
    "haios_budget_limit",
    "haios_budget_used",
    "haios_budget_utilization_ratio",
    "haios_budget_state",
    "haios_budget_window_end_timestamp_seconds",
    "haios_budget_projected_exhaustion_seconds",
    "haios_budget_warnings_total",
    "haios_budget_exceeded_total",
    "haios_soft_kills_total",
    "haios_events_total",
    "haios_unknown_model_events_total",
    "haios_unknown_model_tokens_total",
    "haios_pricing_models",
    "haios_pricing_rejected_rows",
    "haios_cost_report_last_success_timestamp_seconds",
    "haios_label_values_overflow_total",
    "haios_build_info",
];

/// `promtool` from Debian's `prometheus` package. CI sets COSTMETER_REQUIRE_TOOLS=1 so a
/// missing tool fails there instead of skipping.
fn promtool() -> Option<&'static str> {
    crate::util::require_tool("promtool", "apt-get install prometheus")
}

#[test]
fn every_series_of_the_taxonomy_is_listed_with_help_text() {
    let daemon = Daemon::start("");
    daemon.wait_ready();
    let (status, content_type, body) = daemon.get("/metrics", None);
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for series in TAXONOMY {
        assert!(
            body.contains(&format!("# TYPE {series} ")),
            "{series} has a TYPE line"
        );
        let help = body
            .lines()
            .find(|l| l.starts_with(&format!("# HELP {series} ")));
        assert!(
            help.is_some_and(|h| h.len() > series.len() + 10),
            "{series} has help text"
        );
    }
    assert!(
        !body.contains("# EOF") && !body.contains("# UNIT"),
        "no OpenMetrics-only lines"
    );
    let scrape = crate::util::Scrape::parse(&body);
    assert_eq!(
        scrape.value(
            "haios_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.value("haios_target_up", &[("target", "costmeter")]),
        Some(1.0)
    );
}

#[test]
fn openmetrics_is_served_when_asked_for() {
    let daemon = Daemon::start("");
    daemon.wait_ready();
    let (status, content_type, body) = daemon.get(
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
    );
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"));
    assert!(body.contains("# TYPE haios_cpu_seconds counter"));
    assert!(body.contains("# UNIT haios_cpu_seconds seconds"));
}

/// Runs `promtool check metrics` on an exposition and fails the test on any complaint.
/// Returns false when promtool is not installed (and CI does not require it).
#[track_caller]
pub fn assert_promtool_accepts(body: &str) -> bool {
    let Some(promtool) = promtool() else {
        return false;
    };
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let output = check.wait_with_output().expect("promtool finishes");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool check metrics: {complaints}\n{body}"
    );
    true
}

#[test]
fn promtool_accepts_the_text_exposition() {
    let daemon = Daemon::start("[metrics]\nnamespace = \"haios\"\n");
    daemon.wait_ready();
    let (_, _, body) = daemon.get("/metrics", None);
    assert_promtool_accepts(&body);
}

#[test]
fn namespace_renames_every_series() {
    let daemon = Daemon::start("[metrics]\nnamespace = \"acme\"\n");
    daemon.wait_ready();
    let (_, _, body) = daemon.get("/metrics", None);
    assert!(body.contains("# TYPE acme_cpu_seconds_total counter"));
    assert!(
        !body.contains("haios_"),
        "no series keeps the default prefix"
    );
}

#[test]
fn health_and_readiness_answer() {
    let daemon = Daemon::start("");
    assert_eq!(daemon.get("/healthz", None).0, 200);
    daemon.wait_ready();
    let (_, content_type, body) = daemon.get("/readyz", None);
    assert_eq!(content_type, "application/json");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(ready["ready"], true);
    assert!(ready["checks"].as_array().is_some_and(|c| c.len() >= 2));
}

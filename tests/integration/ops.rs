//! The operations bundle: the weekly cost report, and the compose file's mounts.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Daemon, wait_for};

const SETTLE: Duration = Duration::from_secs(20);

#[test]
fn the_cost_report_answers_in_json_and_markdown_and_is_written_weekly() {
    let daemon = Daemon::start(
        "[report]\nevery = \"7d\"\ndir = \"reports\"\n\n[[budget]]\nname = \"usd\"\nresource = \"usd\"\nlimit = 10.0\non_exceed = \"alert\"\n",
    );
    daemon.post_events(&json!([
        {"type": "task_start", "task_id": "t-1", "run_id": "r-1", "task_type": "build"},
        {"type": "llm_usage", "agent": "coder", "model": "gpt-5", "task_id": "t-1", "input_tokens": 1000, "output_tokens": 100, "cost_usd": 1.5},
        {"type": "llm_usage", "agent": "reviewer", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 1, "cost_usd": 0.5},
        {"type": "run_start", "run_id": "r-1", "agent": "coder"},
        {"type": "run_end", "run_id": "r-1", "result": "failure", "failure_class": "tool", "error_summary": "lint failed"}
    ]));
    let (status, _, body) = daemon.get("/v1/report?window=7d&format=json", None);
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(report["total_usd"], 2.0);
    assert_eq!(report["total_tokens"], 1111);
    assert_eq!(report["top_tasks"][0]["task_id"], "t-1");
    assert_eq!(report["failures"][0]["error_summary"], "lint failed");
    assert_eq!(report["budgets"][0]["name"], "usd");
    let (status, content_type, markdown) = daemon.get("/v1/report?format=md", None);
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/markdown"));
    assert!(
        markdown.contains("## Spend by day, agent and model")
            && markdown.contains("| coder | gpt-5 | 1100 | 1.5000 |"),
        "{markdown}"
    );
    assert_eq!(daemon.get("/v1/report?window=soon", None).0, 400);

    // Written once at start, into the ISO week's file, and the gauge the alert watches is set.
    let dir = daemon.dir.path().join("reports");
    let file = wait_for("the weekly report file", SETTLE, || {
        std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "md"))
    });
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        name.starts_with("cost_report_") && name.contains("-W"),
        "{name}"
    );
    let stamp = daemon
        .scrape()
        .value("haios_cost_report_last_success_timestamp_seconds", &[])
        .unwrap_or(0.0);
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!((now - stamp).abs() < 60.0, "{stamp}");
}

#[test]
fn every_file_the_compose_stack_mounts_or_builds_from_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).expect("compose file");
    let mut checked = 0;
    for line in compose.lines() {
        let line = line.trim();
        if let Some(mount) = line.strip_prefix("- ./") {
            let source = mount.split(':').next().unwrap_or_default();
            assert!(
                root.join(source).exists(),
                "docker-compose.yml mounts ./{source}, which does not exist"
            );
            checked += 1;
        }
        if line == "build: ." {
            assert!(
                root.join("Dockerfile").is_file(),
                "the build context needs a Dockerfile"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 9,
        "found only {checked} mounts and builds to check"
    );
}

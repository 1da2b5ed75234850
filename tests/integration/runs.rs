//! `GET /v1/runs`, `/v1/runs/{id}` and `/v1/tasks/{id}`: filters, pagination and cost records.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Daemon, Workload, at};

const SETTLE: Duration = Duration::from_secs(20);

fn get_json(daemon: &Daemon, path: &str) -> (u16, Value) {
    let (status, _, body) = daemon.get(path, None);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Posts `count` finished runs, one minute apart, alternating success and failure.
fn post_runs(daemon: &Daemon, count: usize) {
    let mut events = Vec::new();
    for i in 0..count {
        let start = at(&format!("10:{:02}:00", i));
        let end = at(&format!("10:{:02}:30", i));
        let (result, class) = if i % 2 == 0 {
            ("success", Value::Null)
        } else {
            ("failure", json!("tool"))
        };
        events.push(json!({"type": "run_start", "run_id": format!("r{i:02}"), "agent": if i < 4 { "coder" } else { "reviewer" }, "ts": start}));
        let mut end_event =
            json!({"type": "run_end", "run_id": format!("r{i:02}"), "result": result, "ts": end});
        if !class.is_null() {
            end_event["failure_class"] = class;
            end_event["error_summary"] = json!(format!("step {i} failed"));
        }
        events.push(end_event);
    }
    daemon.post_events(&Value::Array(events));
}

#[test]
fn an_empty_store_lists_no_runs() {
    let daemon = Daemon::start("");
    let (status, page) = get_json(&daemon, "/v1/runs");
    assert_eq!(status, 200);
    assert_eq!(page, json!({"runs": [], "next_cursor": null}));
}

#[test]
fn runs_come_newest_first_in_pages_with_an_opaque_cursor() {
    let daemon = Daemon::start("");
    post_runs(&daemon, 7);
    let (_, one_page) = get_json(&daemon, "/v1/runs");
    let ids: Vec<&str> = one_page["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["r06", "r05", "r04", "r03", "r02", "r01", "r00"]);
    assert!(
        one_page["next_cursor"].is_null(),
        "everything fit in one page"
    );

    let mut seen = Vec::new();
    let mut path = "/v1/runs?limit=3".to_string();
    loop {
        let (status, page) = get_json(&daemon, &path);
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["runs"]
                .as_array()
                .expect("runs")
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_string)),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/runs?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        vec!["r06", "r05", "r04", "r03", "r02", "r01", "r00"],
        "three pages, nothing lost or repeated"
    );
    assert_eq!(get_json(&daemon, "/v1/runs?cursor=zz").0, 400);
}

#[test]
fn filters_narrow_the_list_and_a_filter_can_match_nothing() {
    let daemon = Daemon::start("");
    post_runs(&daemon, 7);
    let ids = |path: &str| -> Vec<String> {
        let (status, page) = get_json(&daemon, path);
        assert_eq!(status, 200, "{page}");
        page["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(ids("/v1/runs?status=failed"), vec!["r05", "r03", "r01"]);
    assert_eq!(
        ids("/v1/runs?status=failure&agent=coder"),
        vec!["r03", "r01"]
    );
    assert_eq!(
        ids(&format!("/v1/runs?since={}", at("10:05:00"))),
        vec!["r06", "r05"]
    );
    assert!(ids("/v1/runs?agent=nobody").is_empty());
    assert!(
        ids("/v1/runs?since=1h").is_empty(),
        "all were posted with timestamps of 10:00 to 10:06 today"
    );
    assert_eq!(get_json(&daemon, "/v1/runs?status=exploded").0, 400);
    let (_, page) = get_json(&daemon, "/v1/runs?status=failed&limit=1");
    let run = &page["runs"][0];
    assert_eq!(run["error_summary"], "step 5 failed");
    assert_eq!(run["failure_class"], "tool");
    assert_eq!(run["duration_seconds"], 30.0);
}

#[test]
fn a_task_carries_its_cost_record() {
    let busy = Workload::shell("while :; do :; done");
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"coder\"\npid = {}\nsample_interval = \"50ms\"\n",
        busy.pid()
    ));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    daemon.post_events(&json!([
        {"type": "run_start", "run_id": "run-1", "agent": "coder"},
        {"type": "task_start", "task_id": "t-1", "run_id": "run-1", "task_type": "build", "agent": "coder", "trace_id": trace},
        {"type": "llm_usage", "agent": "coder", "model": "gpt-5", "task_id": "t-1", "input_tokens": 1000, "output_tokens": 100, "cost_usd": 0.25}
    ]));
    // Let the busy target run inside the task for a while.
    let cpu_before = daemon.wait_metric(
        "haios_cpu_seconds_total",
        &[("target", "coder")],
        SETTLE,
        |v| v > 0.0,
    );
    daemon.wait_metric(
        "haios_cpu_seconds_total",
        &[("target", "coder")],
        SETTLE,
        |v| v > cpu_before + 0.3,
    );
    daemon.post_events(&json!([
        {"type": "task_end", "task_id": "t-1", "run_id": "run-1", "task_type": "build", "result": "success"},
        {"type": "run_end", "run_id": "run-1", "result": "success"}
    ]));
    let (status, task) = get_json(&daemon, "/v1/tasks/t-1");
    assert_eq!(status, 200, "{task}");
    let record = &task["cost_record"];
    assert_eq!(record["tokens"], 1100);
    assert_eq!(record["usd"], 0.25);
    assert_eq!(record["trace_id"], trace);
    assert!(
        record["cpu_seconds"].as_f64().is_some_and(|cpu| cpu >= 0.3),
        "{record}"
    );
    assert!(
        record["mem_peak_bytes"].as_u64().is_some_and(|m| m > 0),
        "{record}"
    );

    let (_, run) = get_json(&daemon, "/v1/runs/run-1");
    assert_eq!(run["status"], "success");
    assert_eq!(run["tasks"], json!({"success": 1}));
    assert_eq!(
        run["usage"],
        json!([{"task_type": "build", "model": "gpt-5", "tokens": 1100, "usd": 0.25}])
    );
    assert_eq!(run["task_list"][0]["id"], "t-1");
    assert_eq!(run["task_list"][0]["cost_record"]["tokens"], 1100);
    assert_eq!(get_json(&daemon, "/v1/runs/nope").0, 404);
    assert_eq!(get_json(&daemon, "/v1/tasks/nope").0, 404);
    drop(busy);
}

#[test]
fn the_status_file_holds_each_task_with_its_cost_record() {
    let daemon = Daemon::start("[status_file]\npath = \"exec_status_{g}.txt\"\n");
    daemon.post_events(&json!([
        {"type": "task_start", "task_id": "t-1", "run_id": "run-9", "task_type": "build", "ts": at("10:00:00")},
        {"type": "llm_usage", "agent": "coder", "model": "gpt-5", "task_id": "t-1", "input_tokens": 500, "output_tokens": 20, "cost_usd": 0.01},
        {"type": "task_end", "task_id": "t-1", "run_id": "run-9", "task_type": "build", "result": "success", "ts": at("10:00:10")},
        {"type": "task_start", "task_id": "t-2", "run_id": "run-9", "task_type": "test", "ts": at("10:00:10")},
        {"type": "task_end", "task_id": "t-2", "run_id": "run-9", "task_type": "test", "result": "failure", "failure_class": "tool", "ts": at("10:00:15")}
    ]));
    let path = daemon.dir.path().join("exec_status_run-9.txt");
    // Written after the answer, by the status-file writer.
    let text = crate::util::wait_for("the status file with both tasks", SETTLE, || {
        std::fs::read_to_string(&path)
            .ok()
            .filter(|t| t.contains("task t-2"))
    });
    assert!(
        text.contains("task t-1\n  type: build\n  status: success"),
        "{text}"
    );
    assert!(text.contains("  cost_record:\n    cpu_seconds: "), "{text}");
    assert!(text.contains("    tokens: 520\n    usd: 0.01\n"), "{text}");
    assert!(
        text.contains("task t-2\n  type: test\n  status: failure"),
        "{text}"
    );
    assert!(text.contains("  failure_class: tool"), "{text}");
    assert!(
        !daemon.dir.path().join("exec_status_run-9.tmp").exists(),
        "written then renamed"
    );
}

#[test]
fn a_thousand_task_run_is_written_a_few_times_not_a_thousand() {
    let daemon = Daemon::builder()
        .config("[status_file]\npath = \"exec_status_{g}.txt\"\n")
        .log_filter("info,costmeter::status_files=debug")
        .start();
    for chunk in 0..10 {
        let events: Vec<Value> = (0..100)
            .flat_map(|i| {
                let task = format!("t-{}", chunk * 100 + i);
                [
                    json!({"type": "task_start", "task_id": task, "run_id": "big", "task_type": "edit"}),
                    json!({"type": "task_end", "task_id": task, "run_id": "big", "task_type": "edit", "result": "success"}),
                ]
            })
            .collect();
        daemon.post_events(&Value::Array(events));
    }
    let path = daemon.dir.path().join("exec_status_big.txt");
    crate::util::wait_for("all 1,000 tasks in the status file", SETTLE, || {
        std::fs::read_to_string(&path).ok().filter(|t| {
            t.matches("\ntask t-").count() + usize::from(t.starts_with("task t-")) == 1000
        })
    });
    let writes = crate::util::wait_for("the writes to be logged", SETTLE, || {
        Some(daemon.log_count("status file written")).filter(|n| *n > 0)
    });
    assert!(
        (1..=20).contains(&writes),
        "{writes} writes for 1,000 task ends: each batch is written once, after its answer"
    );
}

//! The client verbs against a live daemon, in table and JSON form.

use std::process::Command;

use serde_json::{Value, json};

use crate::util::{Daemon, at, costmeter_bin};

fn verb(daemon: &Daemon, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(costmeter_bin())
        .args(args)
        .arg("--url")
        .arg(format!("http://{}", daemon.addr))
        .output()
        .expect("run the verb");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        !stdout.contains('\u{1b}'),
        "no colour codes when stdout is not a terminal: {stdout}"
    );
    (
        output.status.code().unwrap_or(-1),
        stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn seeded() -> Daemon {
    let daemon = Daemon::start(
        "[[budget]]\nname = \"coder-usd\"\nresource = \"usd\"\nlimit = 2.0\nagent = \"coder\"\non_exceed = \"alert\"\n",
    );
    daemon.post_events(&json!([
        {"type": "run_start", "run_id": "run-ok", "agent": "coder", "ts": at("09:00:00")},
        {"type": "run_end", "run_id": "run-ok", "result": "success", "ts": at("09:01:00")},
        {"type": "run_start", "run_id": "run-bad", "agent": "coder", "ts": at("10:00:00")},
        {"type": "task_start", "task_id": "t-9", "run_id": "run-bad", "task_type": "test", "ts": at("10:00:01")},
        {"type": "llm_usage", "agent": "coder", "model": "gpt-5", "task_id": "t-9", "input_tokens": 1000, "output_tokens": 100, "cost_usd": 1.9},
        {"type": "llm_usage", "agent": "coder", "model": "secret-model", "input_tokens": 10, "output_tokens": 1},
        {"type": "task_end", "task_id": "t-9", "run_id": "run-bad", "task_type": "test", "result": "failure", "ts": at("10:00:09")},
        {"type": "run_end", "run_id": "run-bad", "result": "failure", "failure_class": "tool", "error_summary": "pytest exited 1", "ts": at("10:00:10")}
    ]));
    daemon
}

#[test]
fn status_in_table_and_json() {
    let daemon = seeded();
    let (code, table, _) = verb(&daemon, &["status"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("costmeter ") && table.contains("ready"),
        "{table}"
    );
    assert!(
        table.contains("coder-usd") && table.contains("warning"),
        "{table}"
    );
    assert!(
        table.lines().all(|l| l.chars().count() <= 80),
        "fits 80 columns:\n{table}"
    );
    let (_, json, _) = verb(&daemon, &["status", "--format", "json"]);
    let status: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(status["ready"], true);
    assert_eq!(status["budgets"][0]["state"], "warning");
    assert_eq!(status["spend"]["last_7d"]["usd"], 1.9);
}

#[test]
fn a_fresh_daemon_gets_first_run_hints() {
    let daemon = Daemon::start("");
    daemon.wait_ready();
    let (_, table, _) = verb(&daemon, &["status"]);
    assert!(
        table.contains("hint: no LLM usage reported")
            && table.contains("hint: no budgets configured"),
        "{table}"
    );
}

#[test]
fn budgets_show_a_bar_per_budget() {
    let daemon = seeded();
    let (code, table, _) = verb(&daemon, &["budgets"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("coder-usd") && table.contains("###################.   95%"),
        "95 % bar:\n{table}"
    );
    let (_, json, _) = verb(&daemon, &["budgets", "--format", "json"]);
    let budgets: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(budgets["budgets"][0]["used"], 1.9);
}

#[test]
fn runs_answer_which_failed_most_recently_and_why() {
    let daemon = seeded();
    let (code, table, _) = verb(&daemon, &["runs", "--status", "failed", "--limit", "1"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("run-bad") && table.contains("tool: pytest exited 1"),
        "{table}"
    );
    assert!(!table.contains("run-ok"));
    let (_, json, _) = verb(&daemon, &["runs", "--format", "json"]);
    let page: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(page["runs"].as_array().map(Vec::len), Some(2));
    let (code, detail, _) = verb(&daemon, &["runs", "show", "run-bad"]);
    assert_eq!(code, 0);
    assert!(
        detail.contains("failed (tool): pytest exited 1")
            && detail.contains("t-9")
            && detail.contains("1.9000"),
        "{detail}"
    );
    let (code, _, error) = verb(&daemon, &["runs", "show", "no-such-run"]);
    assert_eq!(code, 1);
    assert!(error.contains("no run 'no-such-run'"), "{error}");
}

#[test]
fn report_and_pricing_status() {
    let daemon = seeded();
    let (code, markdown, _) = verb(&daemon, &["report", "--format", "md"]);
    assert_eq!(code, 0);
    assert!(
        markdown.starts_with("# costmeter cost report") && markdown.contains("| coder | gpt-5 |"),
        "{markdown}"
    );
    let (_, table, _) = verb(&daemon, &["report"]);
    assert!(
        table.contains("for 1111 tokens") && table.contains("gpt-5"),
        "{table}"
    );
    let (code, pricing, _) = verb(&daemon, &["pricing", "status"]);
    assert_eq!(code, 0);
    assert!(
        pricing.contains("baseline litellm-1.108.7") && pricing.contains("secret-model"),
        "{pricing}"
    );
}

#[test]
fn an_unreachable_daemon_is_exit_1_with_a_hint() {
    let port = crate::util::free_port();
    let output = Command::new(costmeter_bin())
        .args(["status", "--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("cannot reach costmeter") && error.contains("--url"),
        "{error}"
    );
}

#[test]
fn emit_reports_events_from_the_shell() {
    let daemon = Daemon::start("");
    let url = format!("http://{}", daemon.addr);
    let emit = |args: &[&str]| {
        let output = Command::new(costmeter_bin())
            .arg("emit")
            .args(args)
            .arg("--url")
            .arg(&url)
            .output()
            .expect("run emit");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let usage = [
        "usage",
        "--agent",
        "coder",
        "--model",
        "gpt-4o",
        "--input",
        "100000",
        "--cache-read",
        "50000",
        "--output",
        "10000",
        "--event-id",
        "e-1",
    ];
    let (code, out, _) = emit(&usage);
    assert_eq!((code, out.trim()), (0, "accepted"));
    let (code, out, _) = emit(&usage);
    assert_eq!(code, 0);
    assert!(out.contains("duplicate"), "{out}");
    assert_eq!(
        emit(&["task-start", "--task-id", "t", "--type", "build"]).0,
        0
    );
    assert_eq!(
        emit(&[
            "task-end",
            "--task-id",
            "t",
            "--type",
            "build",
            "--result",
            "success"
        ])
        .0,
        0
    );
    let (code, _, error) = emit(&[
        "task-end",
        "--task-id",
        "t",
        "--type",
        "build",
        "--result",
        "exploded",
    ]);
    assert_eq!(code, 1);
    assert!(error.contains("field 'result': must be one of"), "{error}");
    let scrape = daemon.scrape();
    let spend = scrape
        .value(
            "haios_usd_spend_total",
            &[("agent", "coder"), ("model", "gpt-4o")],
        )
        .unwrap_or(0.0);
    assert!((spend - 0.2875).abs() < 1e-9, "{spend}");
    assert_eq!(
        scrape.value(
            "haios_task_total",
            &[("type", "build"), ("result", "success")]
        ),
        Some(1.0)
    );
}

pub(crate) fn doctor(daemon_url: &str) -> (i32, Value) {
    let output = Command::new(costmeter_bin())
        .args(["doctor", "--format", "json", "--url", daemon_url])
        .output()
        .expect("run doctor");
    let answer = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), answer)
}

/// Runs doctor until `check` is red and doctor exits 3; its answer.
fn await_red(url: &str, check: &str) -> Value {
    crate::util::wait_for(
        &format!("doctor's {check} check to turn red"),
        std::time::Duration::from_secs(20),
        || {
            let (code, answer) = doctor(url);
            (code == 3 && finding(&answer, check)["status"] == "red").then_some(answer)
        },
    )
}

pub(crate) fn finding<'a>(answer: &'a Value, name: &str) -> &'a Value {
    answer["findings"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["name"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
fn doctor_is_green_on_a_healthy_daemon_and_red_when_it_cannot_reach_it() {
    let daemon = Daemon::start("");
    daemon.wait_ready();
    let (code, answer) = doctor(&format!("http://{}", daemon.addr));
    assert_eq!(code, 0, "{answer}");
    assert_eq!(answer["healthy"], true);
    assert!(
        answer["findings"]
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["status"] == "green")),
        "{answer}"
    );
    let port = crate::util::free_port();
    let (code, answer) = doctor(&format!("http://127.0.0.1:{port}"));
    assert_eq!(code, 3);
    assert_eq!(finding(&answer, "daemon")["status"], "red");
    assert!(
        finding(&answer, "daemon")["fix"]
            .as_str()
            .is_some_and(|f| f.contains("costmeter run"))
    );
}

#[test]
fn doctor_turns_red_when_the_span_collector_is_unreachable_in_strict_mode() {
    let port = crate::util::free_port();
    let daemon = Daemon::start(&format!(
        "[telemetry]\notlp_endpoint = \"http://127.0.0.1:{port}\"\n"
    ));
    let url = format!("http://{}", daemon.addr);
    let answer = await_red(&url, "telemetry");
    assert!(
        finding(&answer, "telemetry")["fix"]
            .as_str()
            .is_some_and(|f| f.contains("dev_fast"))
    );
}

#[test]
fn doctor_warns_of_missing_targets_unknown_models_overflow_and_idle_budget_scopes() {
    let daemon = Daemon::start(
        "[metrics]\nmax_label_values = 1\n\n[[target]]\nname = \"ghost\"\npid_file = \"/nonexistent/agent.pid\"\nsample_interval = \"50ms\"\n\n\
         [[budget]]\nname = \"reviewer-tokens\"\nresource = \"tokens\"\nlimit = 1000\nagent = \"reviewer\"\n",
    );
    daemon.wait_metric(
        "haios_target_up",
        &[("target", "ghost")],
        std::time::Duration::from_secs(10),
        |v| v == 0.0,
    );
    daemon.post_events(&json!([
        {"type": "llm_usage", "agent": "coder", "model": "mystery", "input_tokens": 1, "output_tokens": 1},
        {"type": "llm_usage", "agent": "other", "model": "gpt-5", "input_tokens": 1, "output_tokens": 1}
    ]));
    let (code, answer) = doctor(&format!("http://{}", daemon.addr));
    assert_eq!(code, 0, "warnings are not failures: {answer}");
    for name in ["targets", "pricing", "cardinality", "budget scopes"] {
        assert_eq!(
            finding(&answer, name)["status"],
            "yellow",
            "{name}: {answer}"
        );
        assert!(
            finding(&answer, name)["fix"]
                .as_str()
                .is_some_and(|f| !f.is_empty()),
            "{name} has a fix"
        );
    }
    assert!(
        finding(&answer, "pricing")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("mystery"))
    );
    assert!(
        finding(&answer, "budget scopes")["detail"]
            .as_str()
            .is_some_and(|d| d.contains("reviewer-tokens"))
    );
}

#[test]
fn doctor_is_red_when_usage_is_priced_at_0_under_a_usd_budget() {
    let daemon = Daemon::start("[budgets]\nusd = 10.0\n");
    daemon.post_events(&json!(
        {"type": "llm_usage", "agent": "coder", "model": "no-such-model-9", "input_tokens": 5000, "output_tokens": 500}
    ));
    let url = format!("http://{}", daemon.addr);
    let (code, answer) = doctor(&url);
    assert_eq!(code, 3, "{answer}");
    let unpriced = finding(&answer, "unpriced usage");
    assert_eq!(unpriced["status"], "red", "{answer}");
    assert!(
        unpriced["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no-such-model-9")),
        "{answer}"
    );
    assert!(
        unpriced["fix"]
            .as_str()
            .is_some_and(|f| f.contains("[pricing.models.\"no-such-model-9\"]")),
        "{answer}"
    );
    let (_, _, status) = daemon.get("/v1/status", None);
    let status: Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["problems"][0]["name"], "unpriced usage", "{status}");
}

#[test]
fn an_empty_ledger_answers_zero_not_negative_zero() {
    let daemon = Daemon::start("[budgets]\nusd = 10.0\n");
    for path in ["/v1/status", "/v1/report", "/v1/budgets"] {
        let (status, _, body) = daemon.get(path, None);
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            !body.contains("-0.0") && !body.contains(":-0"),
            "{path}: {body}"
        );
    }
}

/// The JSON Schemas printed in README, by name (`<!-- schema: NAME -->` before a json fence).
fn readme_schemas() -> std::collections::HashMap<String, Value> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let mut schemas = std::collections::HashMap::new();
    for part in readme.split("<!-- schema: ").skip(1) {
        let (name, rest) = part.split_once(" -->").expect("a schema marker");
        let body = rest
            .split_once("```json\n")
            .and_then(|(_, b)| b.split_once("\n```"))
            .map(|(b, _)| b)
            .expect("a json block");
        let schema: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("README schema {name} is not JSON: {e}"));
        schemas.insert(name.to_string(), schema);
    }
    schemas
}

#[test]
fn every_json_output_matches_its_schema_in_readme() {
    let daemon = seeded();
    let schemas = readme_schemas();
    let url = format!("http://{}", daemon.addr);
    let cases: [(&str, Vec<&str>); 8] = [
        ("status", vec!["status"]),
        ("budgets", vec!["budgets"]),
        ("runs", vec!["runs"]),
        ("run", vec!["runs", "show", "run-bad"]),
        ("report", vec!["report"]),
        ("pricing", vec!["pricing", "status"]),
        ("doctor", vec!["doctor"]),
        ("emit", vec!["emit", "lock-wait", "--seconds", "0.5"]),
    ];
    for (name, args) in cases {
        let output = Command::new(costmeter_bin())
            .args(&args)
            .args(["--format", "json", "--url", &url])
            .output()
            .expect("run the verb");
        let value: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "{name}: not JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        });
        let schema = schemas
            .get(name)
            .unwrap_or_else(|| panic!("README has no schema for {name}"));
        let validator = jsonschema::validator_for(schema)
            .unwrap_or_else(|e| panic!("README schema {name} is invalid: {e}"));
        let problems: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            problems.is_empty(),
            "{name} output does not match README's schema: {problems:?}\n{value}"
        );
    }
}

#[test]
fn doctor_turns_red_when_the_weekly_report_cannot_be_written() {
    let daemon =
        Daemon::start("[report]\nevery = \"7d\"\ndir = \"/proc/costmeter-cannot-write-here\"\n");
    let url = format!("http://{}", daemon.addr);
    let answer = await_red(&url, "cost report");
    assert!(
        finding(&answer, "cost report")["fix"]
            .as_str()
            .is_some_and(|f| f.contains("[report] dir")),
        "{answer}"
    );
}

#[test]
fn doctor_turns_red_when_the_store_cannot_take_writes() {
    // A full filesystem under the store: a small tmpfs, filled up.
    let dir = crate::util::scratch_dir();
    let mount = dir.path().join("small");
    std::fs::create_dir_all(&mount).expect("mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mount)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var_os("COSTMETER_REQUIRE_TOOLS").is_none(),
            "CI runs as root and can mount a tmpfs"
        );
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    }
    let daemon = Daemon::start(&format!(
        "[store]\npath = \"{}/costmeter.db\"\n",
        mount.display()
    ));
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "status=none"])
        .arg(format!("of={}/filler", mount.display()))
        .status();
    let events: Vec<Value> = (0..2000)
        .map(|i| json!({"type": "file_write", "bytes": i, "path": "x".repeat(200)}))
        .collect();
    let (status, answer) = daemon.post(
        "/v1/events",
        "application/json",
        Value::Array(events).to_string().as_bytes(),
    );
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("nothing from this request was recorded")),
        "{answer}"
    );
    let (code, answer) = doctor(&format!("http://{}", daemon.addr));
    assert_eq!(code, 3, "{answer}");
    assert_eq!(finding(&answer, "store")["status"], "red");
    assert!(
        finding(&answer, "store")["fix"]
            .as_str()
            .is_some_and(|f| f.contains("free space"))
    );
    drop(daemon);
    let _ = Command::new("umount").arg(&mount).status();
}

#[test]
fn slow_answers_show_progress_on_a_terminal_and_only_there() {
    // A stand-in daemon that takes 1.2 s to answer the report.
    let url = crate::util::stand_in(
        std::time::Duration::from_millis(1200),
        |_| r#"{"from":"a","to":"b","total_usd":0,"total_tokens":0,"spend":[],"top_tasks":[],"budgets":[],"failures":[]}"#,
    );
    // On a pseudo-terminal (util-linux `script`), progress shows.
    let command = format!("{} report --url {url}", costmeter_bin().display());
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("run script");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(
        screen.contains("waiting for costmeter"),
        "progress on a terminal:\n{screen}"
    );
    // Piped, it does not.
    let output = Command::new(costmeter_bin())
        .args(["report", "--url", &url])
        .output()
        .expect("run report");
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("waiting"),
        "no progress when not on a terminal"
    );
    assert!(output.status.success());
}

#[test]
fn doctor_warns_when_the_daemon_clock_is_off() {
    // A stand-in daemon whose clock says 2020.
    let url = crate::util::stand_in(std::time::Duration::ZERO, |path| match path {
        "/v1/status" => {
            r#"{"version":"0.0.0","now":"2020-01-01T00:00:00Z","started":"2020-01-01T00:00:00Z",
                "uptime_seconds":1.0,"ready":true,"checks":[],"problems":[],
                "spend":{"last_24h":{"usd":0.0,"tokens":0},"last_7d":{"usd":0.0,"tokens":0}},
                "budgets":[],"targets":[],
                "report":{"configured":false,"last_success":null,"last_error":null},
                "attention":{"targets_down":[],"unpriced_models":[],"folded_labels":[],"agents_seen":[]},
                "hints":[]}"#
        }
        "/v1/budgets" => r#"{"budgets":[]}"#,
        _ => "",
    });
    let (code, answer) = doctor(&url);
    assert_eq!(code, 0, "a skewed clock is a warning: {answer}");
    assert_eq!(finding(&answer, "clock")["status"], "yellow", "{answer}");
    assert!(
        finding(&answer, "clock")["fix"]
            .as_str()
            .is_some_and(|f| f.contains("NTP"))
    );
}

//! `POST /v1/events` end to end: acceptance, the bad-input table, duplicates across restarts,
//! a SIGKILL mid-stream, the cardinality cap, escaping, auth and pricing status.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Daemon, Workload, at, proc_cpu_seconds, wait_for, write};

const SETTLE: Duration = Duration::from_secs(20);

fn usage(id: &str, agent: &str, model: &str, input: u64, cache_read: u64, output: u64) -> Value {
    json!({
        "type": "llm_usage", "event_id": id, "agent": agent, "model": model,
        "input_tokens": input, "cache_read_tokens": cache_read, "output_tokens": output
    })
}

fn tokens(daemon: &Daemon, agent: &str, model: &str, kind: &str) -> f64 {
    daemon
        .scrape()
        .value(
            "haios_tokens_total",
            &[("agent", agent), ("model", model), ("kind", kind)],
        )
        .unwrap_or(0.0)
}

#[test]
fn every_event_type_is_accepted_and_moves_its_series() {
    let daemon = Daemon::start("");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = daemon.post_events(&json!([
        {"type": "run_start", "run_id": "r1", "agent": "coder", "ts": at("10:00:00")},
        {"type": "task_start", "task_id": "t1", "run_id": "r1", "task_type": "build", "ts": at("10:00:00")},
        {"type": "llm_usage", "agent": "coder", "model": "claude-sonnet-4-5", "task_id": "t1", "trace_id": trace,
         "input_tokens": 10000, "cache_read_tokens": 6000, "cache_write_tokens": 2000, "output_tokens": 1000},
        {"type": "lock_wait", "seconds": 0.003, "lock": "registry"},
        {"type": "file_write", "task_id": "t1", "bytes": 4096, "path": "/tmp/out.txt"},
        {"type": "task_end", "task_id": "t1", "run_id": "r1", "task_type": "build", "result": "success", "ts": at("10:00:42")},
        {"type": "run_end", "run_id": "r1", "result": "failure", "failure_class": "tool", "error_summary": "pytest exited 1"}
    ]));
    assert_eq!(
        answer,
        json!({"accepted": 7, "duplicates": 0, "rejected": []})
    );

    let scrape = daemon.scrape();
    let labels = |kind| {
        [
            ("agent", "coder"),
            ("model", "claude-sonnet-4-5"),
            ("kind", kind),
        ]
    };
    // The four kinds are additive: 2,000 uncached + 6,000 read + 2,000 written = 10,000 input.
    assert_eq!(
        scrape.value("haios_tokens_total", &labels("input")),
        Some(2000.0)
    );
    assert_eq!(
        scrape.value("haios_tokens_total", &labels("cache_read")),
        Some(6000.0)
    );
    assert_eq!(
        scrape.value("haios_tokens_total", &labels("cache_write")),
        Some(2000.0)
    );
    assert_eq!(
        scrape.value("haios_tokens_total", &labels("output")),
        Some(1000.0)
    );
    let usd = scrape
        .value(
            "haios_usd_spend_total",
            &[("agent", "coder"), ("model", "claude-sonnet-4-5")],
        )
        .unwrap_or(0.0);
    assert!(
        (usd - 0.0303).abs() < 1e-9,
        "priced by the published example: {usd}"
    );
    assert_eq!(
        scrape.value(
            "haios_task_total",
            &[("type", "build"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert!(
        scrape
            .text
            .contains("haios_task_duration_seconds_sum{type=\"build\"} 42"),
        "42 s task"
    );
    assert!(
        scrape
            .text
            .contains("haios_registry_lock_wait_seconds_count 1")
    );
    assert_eq!(
        scrape.value(
            "haios_events_total",
            &[
                ("source", "http"),
                ("type", "llm_usage"),
                ("result", "accepted")
            ]
        ),
        Some(1.0)
    );

    // OpenMetrics carries the event's trace as an exemplar.
    let (_, _, openmetrics) = daemon.get("/metrics", Some("application/openmetrics-text"));
    assert!(
        openmetrics.contains(&format!("# {{trace_id=\"{trace}\"}}")),
        "exemplar with the trace id:\n{openmetrics}"
    );
}

#[test]
fn ndjson_batches_report_each_rejected_line_and_keep_the_rest() {
    let daemon = Daemon::start("");
    let body = [
        usage("a1", "agent", "gpt-5", 100, 0, 10).to_string(),
        "{not json".to_string(),
        usage("a1", "agent", "gpt-5", 100, 0, 10).to_string(),
        json!({"type": "llm_usage", "agent": "agent", "model": "gpt-5", "input_tokens": -1, "output_tokens": 1}).to_string(),
        usage("a2", "agent", "gpt-5", 50, 0, 5).to_string(),
    ]
    .join("\n");
    let (status, answer) = daemon.post("/v1/events", "application/x-ndjson", body.as_bytes());
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["duplicates"], 1);
    let rejected: Vec<u64> = answer["rejected"]
        .as_array()
        .expect("list")
        .iter()
        .map(|r| r["index"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(rejected, vec![1, 3]);
    assert!(
        answer["rejected"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("line 2 is not valid JSON"))
    );
    assert_eq!(tokens(&daemon, "agent", "gpt-5", "input"), 150.0);
}

/// One row of the README's bad-input table: a body, its content type, the status and a part
/// of the message it must get. Each row is its own test (see the macro below).
fn assert_rejected(content_type: &str, body: &[u8], status: u16, message: &str) {
    let daemon = Daemon::start("");
    let (got, answer) = daemon.post("/v1/events", content_type, body);
    assert_eq!(got, status, "{answer}");
    let text = answer.to_string();
    assert!(text.contains(message), "expected {message:?} in {text}");
    let scrape = daemon.scrape();
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.metric == "haios_tokens_total" || s.metric == "haios_usd_spend_total"),
        "no total moved"
    );
    let rejected_count = |scrape: &crate::util::Scrape| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| {
                (s.metric == "haios_events_total" && s.labels.get("result") == Some("rejected"))
                    || s.metric == "haios_requests_refused_total"
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    wait_for("the rejection to be counted", SETTLE, || {
        (rejected_count(&daemon.scrape()) >= 1.0).then_some(())
    });
}

fn event_with(field: &str, value: Value) -> Vec<u8> {
    let mut event = json!({"type": "llm_usage", "agent": "a", "model": "gpt-5", "input_tokens": 10, "output_tokens": 1});
    event[field] = value;
    event.to_string().into_bytes()
}

macro_rules! bad_input {
    ($($name:ident: $content_type:expr, $body:expr => $status:expr, $message:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_rejected($content_type, AsRef::<[u8]>::as_ref(&$body), $status, $message);
        }
    )*};
}

const JSON: &str = "application/json";

bad_input! {
    bad_input_malformed_json: JSON, b"{\"type\": \"llm_usage\"," => 400, "body is not valid JSON at line 1";
    bad_input_nan: JSON, b"{\"type\":\"llm_usage\",\"agent\":\"a\",\"model\":\"m\",\"input_tokens\":NaN,\"output_tokens\":1}" => 400, "body is not valid JSON";
    bad_input_unknown_field: JSON, event_with("prompt", json!("tell me a secret")) => 400, "field 'prompt': unknown for type llm_usage";
    bad_input_wrong_type: JSON, event_with("input_tokens", json!("12")) => 400, "field 'input_tokens': must be a whole number from 0 to 100000000, got a string";
    bad_input_negative_tokens: JSON, event_with("output_tokens", json!(-1)) => 400, "field 'output_tokens': must be a whole number from 0 to 100000000, got -1";
    bad_input_fractional_tokens: JSON, event_with("input_tokens", json!(1.5)) => 400, "field 'input_tokens': must be a whole number from 0 to 100000000, got 1.5";
    bad_input_absurd_tokens: JSON, event_with("input_tokens", json!(1_000_000_000_000u64)) => 400, "got 1000000000000";
    bad_input_negative_cost: JSON, event_with("cost_usd", json!(-0.5)) => 400, "field 'cost_usd': must be a number from 0 to 10000, got -0.5";
    bad_input_absurd_cost: JSON, event_with("cost_usd", json!(1e9)) => 400, "field 'cost_usd': must be a number from 0 to 10000";
    bad_input_over_long_string: JSON, event_with("agent", json!("x".repeat(300))) => 400, "field 'agent': is 300 characters long; a label may have at most 256";
    bad_input_control_characters: JSON, event_with("model", json!("gpt\n5")) => 400, "field 'model': must not contain control characters";
    bad_input_bad_utf8: JSON, b"{\"type\":\"llm_usage\",\"agent\":\"\xff\"}" => 400, "body is not valid UTF-8";
    bad_input_bad_timestamp: JSON, event_with("ts", json!("yesterday")) => 400, "field 'ts': 'yesterday' is not an RFC 3339 timestamp";
    bad_input_bad_trace_id: JSON, event_with("trace_id", json!("xyz")) => 400, "field 'trace_id': must be 32 lowercase hex digits";
    bad_input_cache_above_input: JSON, event_with("cache_read_tokens", json!(11)) => 400, "input_tokens must count ALL input, cached included";
    bad_input_missing_field: JSON, br#"{"type":"llm_usage","agent":"a","input_tokens":1,"output_tokens":1}"# => 400, "field 'model': is required";
    bad_input_unknown_type: JSON, br#"{"type":"llm_spend"}"# => 400, "field 'type': must be one of llm_usage";
    bad_input_empty_batch: JSON, b"[]" => 400, "body holds no events";
    bad_input_oversize_body: JSON, vec![b' '; 1024 * 1024 + 1] => 413, "body exceeds 1048576 bytes (server.max_body_bytes)";
    bad_input_wrong_content_type: "text/csv", b"agent,model" => 415, "content type 'text/csv' is not accepted";
}

#[test]
fn duplicates_stay_duplicates_across_a_restart_and_totals_come_back() {
    let daemon = Daemon::start("");
    daemon.post_events(&json!([
        usage("e1", "a", "gpt-5", 1000, 200, 100),
        usage("e2", "a", "gpt-5", 10, 0, 1)
    ]));
    let before = daemon.scrape();
    let daemon = daemon.restart(libc::SIGTERM);
    let answer = daemon.post_events(&json!([usage("e1", "a", "gpt-5", 1000, 200, 100)]));
    assert_eq!(answer["duplicates"], 1);
    let after = daemon.scrape();
    for kind in ["input", "cache_read", "output"] {
        let labels = [("agent", "a"), ("model", "gpt-5"), ("kind", kind)];
        assert_eq!(
            after.value("haios_tokens_total", &labels),
            before.value("haios_tokens_total", &labels),
            "{kind}"
        );
    }
    let spend = [("agent", "a"), ("model", "gpt-5")];
    let (was, now) = (
        before.value("haios_usd_spend_total", &spend),
        after.value("haios_usd_spend_total", &spend),
    );
    assert!(
        was.zip(now)
            .is_some_and(|(a, b)| (a - b).abs() < 1e-12 && a > 0.0),
        "{was:?} {now:?}"
    );
}

#[test]
fn every_acknowledged_event_survives_sigkill_exactly_once() {
    let daemon = Daemon::start("");
    let url = daemon.url("/v1/events");
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let attempted = Arc::new(Mutex::new(Vec::new()));
    // Four clients send events until the daemon dies under them.
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (url, acked, attempted) = (url.clone(), acked.clone(), attempted.clone());
            std::thread::spawn(move || {
                let http: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(5)))
                    .build()
                    .into();
                for n in 0..100_000u64 {
                    let id = format!("c{client}-{n}");
                    let event = usage(&id, "crash", "gpt-5", 1 + n % 7, 0, 1);
                    attempted.lock().expect("lock").push(event.clone());
                    match http
                        .post(&url)
                        .header("Content-Type", "application/json")
                        .send(event.to_string())
                    {
                        Ok(response) if response.status().as_u16() == 202 => {
                            acked.lock().expect("lock").insert(id);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();
    wait_for("a few hundred acknowledged events", SETTLE, || {
        (acked.lock().expect("lock").len() >= 400).then_some(())
    });
    let daemon = daemon.restart(libc::SIGKILL);
    for client in clients {
        client.join().expect("client thread");
    }
    let acked = acked.lock().expect("lock").clone();
    let attempted = attempted.lock().expect("lock").clone();
    assert!(acked.len() >= 400);

    // Resend everything that was attempted: acknowledged events must come back as duplicates,
    // and afterwards every attempted event is counted exactly once.
    let mut expected_input = 0.0;
    for chunk in attempted.chunks(500) {
        let answer = daemon.post_events(&Value::Array(chunk.to_vec()));
        let ids: Vec<&str> = chunk
            .iter()
            .map(|e| e["event_id"].as_str().unwrap_or(""))
            .collect();
        let acked_here = ids.iter().filter(|id| acked.contains(**id)).count();
        let duplicates = answer["duplicates"].as_u64().unwrap_or(0) as usize;
        assert!(
            duplicates >= acked_here,
            "{acked_here} acknowledged events were lost: {answer}"
        );
        expected_input += chunk
            .iter()
            .map(|e| e["input_tokens"].as_f64().unwrap_or(0.0))
            .sum::<f64>();
    }
    assert_eq!(
        tokens(&daemon, "crash", "gpt-5", "input"),
        expected_input,
        "each event counted once"
    );
}

#[test]
fn a_flood_of_agent_names_is_capped_and_counted() {
    let daemon = Daemon::start("[metrics]\nmax_label_values = 5\n");
    let events: Vec<Value> = (0..50)
        .map(|i| usage(&format!("f{i}"), &format!("agent-{i}"), "gpt-5", 1, 0, 1))
        .collect();
    daemon.post_events(&Value::Array(events));
    let scrape = daemon.scrape();
    let agents: HashSet<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "haios_usd_spend_total")
        .filter_map(|s| s.labels.get("agent").map(str::to_string))
        .collect();
    assert_eq!(agents.len(), 6, "5 names and __other__: {agents:?}");
    assert!(agents.contains("__other__"));
    assert_eq!(
        scrape.value("haios_label_values_overflow_total", &[("label", "agent")]),
        Some(45.0)
    );
    assert_eq!(
        tokens(&daemon, "__other__", "gpt-5", "output"),
        45.0,
        "folded usage is still counted"
    );
}

#[test]
fn label_values_are_escaped_in_both_formats() {
    let daemon = Daemon::start("");
    let agent = "we\"ird\\agent #1";
    daemon.post_events(&json!([
        usage("x1", agent, "gpt-5", 5, 0, 1),
        usage("x2", "ünïcødé-agent", "gpt-5", 5, 0, 1)
    ]));
    let scrape = daemon.scrape();
    assert!(
        scrape.text.contains(r#"agent="we\"ird\\agent #1""#),
        "escaped in the text format"
    );
    crate::exposition::assert_promtool_accepts(&scrape.text);
    let (_, _, openmetrics) = daemon.get("/metrics", Some("application/openmetrics-text"));
    assert!(openmetrics.contains(r#"agent="we\"ird\\agent #1""#));
}

#[test]
fn writes_need_the_bearer_token_when_one_is_configured() {
    let dir = crate::util::scratch_dir();
    let token_file = dir.path().join("token");
    write(&token_file, "s3cret-token-0123456789\n");
    let daemon = Daemon::start(&format!("token_file = \"{}\"\n", token_file.display()));
    let body = usage("t1", "a", "gpt-5", 1, 0, 1).to_string();
    let (status, answer) = daemon.post("/v1/events", "application/json", body.as_bytes());
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("bearer token"))
    );
    let (status, _) = daemon.post_with(
        "/v1/events",
        "application/json",
        body.as_bytes(),
        Some("wrong-token-0123456789"),
    );
    assert_eq!(status, 401);
    let (status, _) = daemon.post_with(
        "/v1/events",
        "application/json",
        body.as_bytes(),
        Some("s3cret-token-0123456789"),
    );
    assert_eq!(status, 202);
    assert_eq!(daemon.get("/metrics", None).0, 200, "reads stay open");
}

#[test]
fn unknown_models_cost_zero_and_are_listed_never_silent() {
    let dir = crate::util::scratch_dir();
    let manifest = dir.path().join("prices.json");
    write(
        &manifest,
        r#"{"house-model": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
            "typo-model": {"input_cost_per_token": 3.0, "output_cost_per_token": 2e-06}}"#,
    );
    let daemon = Daemon::start(&format!(
        "[pricing]\nmanifest = \"{}\"\n",
        manifest.display()
    ));
    daemon.post_events(&json!([
        usage("u1", "a", "mystery-model", 1000, 0, 500),
        usage("u2", "a", "mystery-model", 10, 0, 5),
        usage("u3", "a", "house-model", 1_000_000, 0, 0)
    ]));
    let scrape = daemon.scrape();
    assert_eq!(
        scrape.value(
            "haios_unknown_model_events_total",
            &[("model", "mystery-model")]
        ),
        Some(2.0)
    );
    assert_eq!(
        scrape.value(
            "haios_unknown_model_tokens_total",
            &[("model", "mystery-model")]
        ),
        Some(1515.0)
    );
    assert_eq!(
        scrape.value(
            "haios_usd_spend_total",
            &[("agent", "a"), ("model", "mystery-model")]
        ),
        Some(0.0)
    );
    assert_eq!(
        scrape.value(
            "haios_usd_spend_total",
            &[("agent", "a"), ("model", "house-model")]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.value("haios_pricing_rejected_rows", &[("source", "manifest")]),
        Some(1.0)
    );
    // Logged once per model: the second event of the same model adds no line.
    wait_for("the unknown-model warning", SETTLE, || {
        (daemon.log_count("no price for this model") >= 1).then_some(())
    });
    assert_eq!(
        daemon.log_count("no price for this model"),
        1,
        "logged once per model"
    );

    let (status, _, body) = daemon.get("/v1/pricing/status", None);
    assert_eq!(status, 200);
    let status: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        status["unknown_models"],
        json!([{"model": "mystery-model", "events": 2, "tokens": 1515}])
    );
    assert_eq!(status["rejected_rows"][0]["model"], "typo-model");
    assert_eq!(status["models"]["manifest"], 1);
    assert!(
        status["models"]["baseline"]
            .as_u64()
            .is_some_and(|n| n >= 20)
    );
}

#[test]
fn resource_counters_resume_after_a_crash_without_counting_twice() {
    let busy = Workload::shell("timeout 2 sh -c 'while :; do :; done'; echo done; exec sleep 600");
    let pid = busy.pid();
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid = {pid}\nsample_interval = \"50ms\"\n"
    ));
    let labels = [("target", "agent")];
    let before = daemon.wait_metric("haios_cpu_seconds_total", &labels, SETTLE, |v| v > 0.1);
    let daemon = daemon.restart(libc::SIGKILL);
    // After the restart the counter starts from the stored total and only grows by new usage.
    let after = daemon.wait_metric("haios_cpu_seconds_total", &labels, SETTLE, |v| v >= before);
    let mut busy = busy;
    busy.wait_line("done");
    let kernel = proc_cpu_seconds(pid);
    let last = daemon.wait_metric("haios_cpu_seconds_total", &labels, SETTLE, |v| {
        v >= kernel * 0.98
    });
    assert!(
        last <= kernel * 1.05 + 0.05,
        "not counted twice: metered {last}, kernel {kernel} (resumed at {after})"
    );
}

/// Regression: after a restart the peak gauge fell back to what the new process had seen.
#[test]
fn the_peak_rss_survives_a_restart_after_the_memory_was_freed() {
    use std::io::{BufRead, BufReader, Write};
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, time\nb = b'\\x01' * (200 << 20)\nprint('held', flush=True)\nsys.stdin.readline()\ndel b\nprint('freed', flush=True)\ntime.sleep(600)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let mut lines = BufReader::new(holder.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("held"));
    let pid = holder.id();
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid = {pid}\nsample_interval = \"50ms\"\n"
    ));
    let labels = [("target", "agent")];
    let mib = 1024.0 * 1024.0;
    daemon.wait_metric("haios_memory_peak_rss_bytes", &labels, SETTLE, |v| {
        v >= 190.0 * mib
    });
    writeln!(holder.stdin.as_mut().expect("stdin"), "free").expect("tell it to free");
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("freed"));
    daemon.wait_metric("haios_memory_rss_bytes", &labels, SETTLE, |v| {
        v < 100.0 * mib
    });
    let daemon = daemon.restart(libc::SIGKILL);
    daemon.wait_metric("haios_target_up", &labels, SETTLE, |v| v == 1.0);
    let peak = daemon
        .scrape()
        .value("haios_memory_peak_rss_bytes", &labels)
        .unwrap_or(0.0);
    assert!(peak >= 190.0 * mib, "the stored peak is kept: {peak}");
    holder.kill().ok();
    holder.wait().ok();
}

#[test]
fn a_config_price_override_wins_over_manifest_and_baseline() {
    let dir = crate::util::scratch_dir();
    let manifest = dir.path().join("prices.json");
    write(
        &manifest,
        r#"{"gpt-5": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}"#,
    );
    let daemon = Daemon::start(&format!(
        "[pricing]\nmanifest = \"{}\"\n[pricing.models.\"gpt-5\"]\ninput = 3.0\noutput = 6.0\n",
        manifest.display()
    ));
    daemon.post_events(&usage("o1", "a", "gpt-5", 1_000_000, 0, 0));
    let spend = daemon.scrape().value(
        "haios_usd_spend_total",
        &[("agent", "a"), ("model", "gpt-5")],
    );
    assert_eq!(
        spend,
        Some(3.0),
        "override $3, not the manifest's $1 nor the baseline's $1.25"
    );
}

#[test]
fn the_report_window_is_exact_whether_read_from_the_rollup_or_the_store() {
    let daemon = Daemon::start("");
    let now = jiff::Timestamp::now();
    let ago = |minutes: i64| {
        now.checked_sub(jiff::SignedDuration::from_mins(minutes))
            .expect("time")
            .to_string()
    };
    let week = 7 * 24 * 60;
    // Two events a few minutes either side of the 7-day edge (inside the rollup's first,
    // partial hour), one yesterday, one 8.5 days ago (only the store has it in reach).
    let events: Vec<Value> = [
        ("inside-edge", week - 3, 100),
        ("outside-edge", week + 3, 1000),
        ("yesterday", 24 * 60, 10),
        ("long-ago", week + 36 * 60, 10000),
    ]
    .iter()
    .map(|(id, minutes, tokens)| {
        json!({"type": "llm_usage", "event_id": id, "ts": ago(*minutes), "agent": "coder",
               "model": "gpt-5", "input_tokens": tokens, "output_tokens": 0, "cost_usd": 0.0})
    })
    .collect();
    assert_eq!(daemon.post_events(&Value::Array(events))["accepted"], 4);
    let tokens = |window: &str| -> u64 {
        let (status, _, body) = daemon.get(&format!("/v1/report?window={window}"), None);
        assert_eq!(status, 200, "{body}");
        let report: Value = serde_json::from_str(&body).expect("JSON");
        report["total_tokens"].as_u64().expect("tokens")
    };
    assert_eq!(
        tokens("7d"),
        110,
        "to the minute at the 7-day edge (rollup + raw head)"
    );
    assert_eq!(
        tokens("10d"),
        11_110,
        "beyond the rollup's reach the store answers"
    );
    assert_eq!(tokens("2d"), 10);
}

//! Budgets and enforcement with real processes and real signals: exec children stopped by a
//! token budget, SIGTERM-proof children SIGKILLed after the grace, CPU and memory budgets,
//! dry runs, windows, Alertmanager payloads, the admission check and the webhook.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Daemon, Workload, alive, at, scratch_dir, wait_for};

const SETTLE: Duration = Duration::from_secs(20);
/// The exit status `costmeter exec` leaves with when a budget stopped the command.
const EXIT_BUDGET_KILLED: i32 = 86;

fn usage(id: &str, agent: &str, tokens: u64, cost: f64) -> Value {
    json!({"type": "llm_usage", "event_id": id, "agent": agent, "model": "gpt-5",
           "input_tokens": tokens, "output_tokens": 0, "cost_usd": cost})
}

#[test]
fn a_token_budget_crossed_by_an_event_stops_the_exec_command_with_sigterm() {
    let dir = scratch_dir();
    let marker = dir.path().join("got-term");
    let script = format!(
        "trap 'echo term > {}; exit 0' TERM; while :; do sleep 0.05; done",
        marker.display()
    );
    let mut daemon = Daemon::builder()
        .config("[budgets]\ntokens = 1000\n[enforcement]\ngrace = \"5s\"\n")
        .exec(&["sh", "-c", &script])
        .start();
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    daemon.post_events(&usage("u1", "coder", 800, 0.0));
    assert!(
        daemon.log_count("soft-kill ordered") == 0,
        "below the limit nothing happens"
    );
    let answer = daemon.post_events(&usage("u2", "coder", 300, 0.0));
    assert_eq!(answer["accepted"], 1);
    let status = daemon.wait_exit(SETTLE);
    assert_eq!(status.code(), Some(EXIT_BUDGET_KILLED));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap_or_default().trim(),
        "term",
        "the SIGTERM handler ran"
    );
    wait_for("the exit message", SETTLE, || {
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("costmeter: budget 'lifetime-tokens' exceeded"))
            .then_some(())
    });
    assert_eq!(daemon.log_count("\"event\":\"budget_warning\""), 1);
    assert_eq!(daemon.log_count("\"event\":\"BUDGET_EXCEEDED\""), 1);
}

#[test]
fn exec_passes_the_command_status_through_when_no_budget_fires() {
    let mut daemon = Daemon::builder().exec(&["sh", "-c", "exit 7"]).start();
    assert_eq!(daemon.wait_exit(SETTLE).code(), Some(7));
}

#[test]
fn a_child_that_ignores_sigterm_is_sigkilled_after_the_grace() {
    let mut daemon = Daemon::builder()
        .config("[budgets]\nusd = 1.0\n[enforcement]\ngrace = \"700ms\"\n")
        .exec(&["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"])
        .start();
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    let ordered = Instant::now();
    daemon.post_events(&usage("u1", "coder", 10, 2.0));
    let status = daemon.wait_exit(SETTLE);
    assert_eq!(status.code(), Some(EXIT_BUDGET_KILLED));
    assert!(
        ordered.elapsed() >= Duration::from_millis(700),
        "SIGKILL came only after the grace"
    );
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("SIGKILL sent to processes that outlived the grace"))
    );
}

#[test]
fn a_cpu_budget_stops_a_busy_child() {
    let busy = Workload::shell("while :; do :; done");
    let pid = busy.pid();
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid = {pid}\nsample_interval = \"50ms\"\n\n\
         [[budget]]\nname = \"cpu\"\nresource = \"cpu_seconds\"\nlimit = 0.5\ntarget = \"agent\"\n\n\
         [enforcement]\ngrace = \"2s\"\n"
    ));
    wait_for("the busy child to be stopped", SETTLE, || {
        (!alive(pid)).then_some(())
    });
    let labels = [("budget", "cpu"), ("resource", "cpu_seconds")];
    daemon.wait_metric(
        "haios_soft_kills_total",
        &[("target", "agent"), ("signal", "SIGTERM")],
        SETTLE,
        |v| v == 1.0,
    );
    let scrape = daemon.scrape();
    assert_eq!(scrape.value("haios_budget_state", &labels), Some(2.0));
    assert_eq!(
        scrape.value("haios_budget_exceeded_total", &labels),
        Some(1.0)
    );
    assert_eq!(scrape.value("haios_budget_limit", &labels), Some(0.5));
    assert!(
        scrape
            .value("haios_budget_used", &labels)
            .is_some_and(|used| used >= 0.5)
    );
    drop(busy);
}

#[test]
fn a_memory_budget_stops_an_allocating_child() {
    let mut grower = Workload::shell(
        "exec python3 -c \"import time\nchunks = []\nprint('ready', flush=True)\nwhile True:\n    chunks.append(b'\\x01' * (8 << 20))\n    time.sleep(0.02)\"",
    );
    grower.wait_line("ready");
    let pid = grower.pid();
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid = {pid}\nsample_interval = \"50ms\"\n\n\
         [[budget]]\nname = \"memory\"\nresource = \"mem_bytes\"\nlimit = \"100MiB\"\ntarget = \"agent\"\n"
    ));
    wait_for("the allocating child to be stopped", SETTLE, || {
        (!alive(pid)).then_some(())
    });
    let labels = [("budget", "memory"), ("resource", "mem_bytes")];
    let scrape = daemon.scrape();
    assert_eq!(
        scrape.value("haios_budget_exceeded_total", &labels),
        Some(1.0)
    );
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("BUDGET_EXCEEDED") && l.contains("mem_bytes"))
    );
}

#[test]
fn dry_run_kills_nothing_and_says_what_it_would_do() {
    let busy = Workload::shell("while :; do :; done");
    let pid = busy.pid();
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid = {pid}\nsample_interval = \"50ms\"\n\n\
         [[budget]]\nname = \"cpu\"\nresource = \"cpu_seconds\"\nlimit = 0.2\ntarget = \"agent\"\n\n\
         [enforcement]\ndry_run = true\n"
    ));
    wait_for("the dry-run report", SETTLE, || {
        (daemon.log_count("dry run: would soft-kill the target") == 1).then_some(())
    });
    wait_for("the action to be recorded", SETTLE, || {
        (daemon.log_count("enforcement recorded") == 1).then_some(())
    });
    assert!(alive(pid), "nothing was signalled");
    let scrape = daemon.scrape();
    assert_eq!(
        scrape.value(
            "haios_budget_state",
            &[("budget", "cpu"), ("resource", "cpu_seconds")]
        ),
        Some(2.0)
    );
    assert_eq!(
        scrape.value(
            "haios_soft_kills_total",
            &[("target", "agent"), ("signal", "SIGTERM")]
        ),
        None
    );
    drop(busy);
}

#[test]
fn a_rolling_window_counts_a_late_report_at_its_ts_and_a_back_dated_one_at_receipt() {
    let daemon = Daemon::start(
        "[[budget]]\nname = \"hourly\"\nresource = \"usd\"\nlimit = 1.0\nwindow = \"1h\"\non_exceed = \"alert\"\n",
    );
    let labels = [("budget", "hourly"), ("resource", "usd")];
    // Two minutes late: within the tolerance, charged at its ts (inside the window).
    let late = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_mins(2))
        .expect("time");
    let mut event = usage("late", "coder", 10, 0.5);
    event["ts"] = json!(late.to_string());
    daemon.post_events(&event);
    daemon.wait_metric("haios_budget_used", &labels, SETTLE, |v| v == 0.5);
    // Dated two hours ago: it cannot slip out of the window; it counts when received.
    let two_hours_ago = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(2))
        .expect("time");
    let mut old = usage("old", "coder", 10, 0.45);
    old["ts"] = json!(two_hours_ago.to_string());
    daemon.post_events(&old);
    let scrape = daemon.scrape();
    assert_eq!(
        scrape.value("haios_budget_state", &labels),
        Some(1.0),
        "warning at 95 %"
    );
    assert_eq!(scrape.value("haios_budget_used", &labels), Some(0.95));
    assert_eq!(
        scrape.value("haios_budget_window_end_timestamp_seconds", &labels),
        None,
        "rolling windows never reset at once"
    );
}

#[test]
fn a_calendar_budget_publishes_its_window_end() {
    let daemon = Daemon::start(
        "[[budget]]\nname = \"daily\"\nresource = \"usd\"\nlimit = 10.0\nwindow = \"day\"\nagent = \"coder\"\n",
    );
    daemon.post_events(&usage("u1", "coder", 10, 1.0));
    // Read the clock on both sides of the scrape: the test may straddle midnight UTC.
    let before = jiff::Timestamp::now().as_second() as f64;
    let end = daemon
        .scrape()
        .value(
            "haios_budget_window_end_timestamp_seconds",
            &[("budget", "daily"), ("resource", "usd")],
        )
        .expect("a calendar window has an end");
    let after = jiff::Timestamp::now().as_second() as f64;
    assert!(
        end > before && end <= after + 86_400.0 && end % 86_400.0 == 0.0,
        "next UTC midnight: {end}"
    );
}

#[test]
fn the_admission_check_answers_402_naming_the_exceeded_budget_not_retryable() {
    let daemon = Daemon::start(
        "[[budget]]\nname = \"coder-usd\"\nresource = \"usd\"\nlimit = 1.0\nagent = \"coder\"\non_exceed = \"alert\"\n",
    );
    let (status, _, body) = daemon.get("/v1/budgets/check?agent=coder", None);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["allowed"], true);
    assert_eq!(answer["budgets"][0]["remaining"], 1.0);
    daemon.post_events(&usage("u1", "coder", 10, 1.5));
    let (status, _, body) = daemon.get("/v1/budgets/check?agent=coder", None);
    assert_eq!(status, 402, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["exceeded"], json!(["coder-usd"]));
    assert_eq!(answer["retryable"], false);
    assert_eq!(
        answer["resets_at"],
        Value::Null,
        "a lifetime budget does not reset"
    );
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("budget 'coder-usd' exceeded"))
    );
    // Another agent is not held by coder's budget.
    assert_eq!(daemon.get("/v1/budgets/check?agent=reviewer", None).0, 200);

    let (_, _, body) = daemon.get("/v1/budgets", None);
    let budgets: Value = serde_json::from_str(&body).expect("JSON");
    let budget = &budgets["budgets"][0];
    assert_eq!(budget["name"], "coder-usd");
    assert_eq!(budget["state"], "exceeded");
    assert_eq!(budget["used"], 1.5);
    assert_eq!(budget["ratio"], 1.5);
}

/// An Alertmanager webhook payload as Alertmanager 0.2x sends it (version 4).
fn alertmanager_payload(target: &str) -> Value {
    json!({
        "receiver": "costmeter",
        "status": "firing",
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": "BudgetExceeded", "code": "BUDGET_EXCEEDED", "costmeter_action": "soft_kill",
                       "target": target, "severity": "critical", "budget": "fleet-usd"},
            "annotations": {"summary": "fleet spend over budget"},
            "startsAt": at("10:00:00.000"),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
            "fingerprint": "c2d4d0ab3f6f9a8e"
        }, {
            "status": "firing",
            "labels": {"alertname": "BudgetExceeded", "costmeter_action": "soft_kill", "target": "not-here"},
            "annotations": {},
            "startsAt": at("10:00:00.000"),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": "0000000000000001"
        }],
        "groupLabels": {"alertname": "BudgetExceeded"},
        "commonLabels": {"alertname": "BudgetExceeded"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": "{}:{alertname=\"BudgetExceeded\"}",
        "truncatedAlerts": 0
    })
}

#[test]
fn an_alertmanager_payload_stops_the_named_local_target() {
    let sleeper = Workload::shell("exec sleep 600");
    let pid = sleeper.pid();
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid = {pid}\nsample_interval = \"50ms\"\n"
    ));
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    let (status, answer) = daemon.post(
        "/v1/alerts",
        "application/json",
        alertmanager_payload("agent").to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["actions"][0]["target"], "agent");
    assert_eq!(answer["ignored"][0]["target"], "not-here");
    wait_for("the target to be stopped", SETTLE, || {
        (!alive(pid)).then_some(())
    });
    daemon.wait_metric(
        "haios_soft_kills_total",
        &[("target", "agent"), ("signal", "SIGTERM")],
        SETTLE,
        |v| v == 1.0,
    );
    let (status, answer) = daemon.post("/v1/alerts", "application/json", b"{\"alerts\": 5}");
    assert_eq!(status, 400, "{answer}");
}

/// A webhook receiver on loopback: every JSON body it gets goes to the channel.
fn webhook_receiver() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (sender, received) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                let _ = sender.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let _ = reader.get_mut().write_all(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (url, received)
}

#[test]
fn every_transition_reaches_the_webhook_once() {
    let (url, received) = webhook_receiver();
    let daemon = Daemon::start(&format!(
        "[[budget]]\nname = \"usd\"\nresource = \"usd\"\nlimit = 1.0\non_exceed = \"alert\"\n\n[enforcement]\nwebhook = \"{url}\"\n"
    ));
    daemon.post_events(&usage("u1", "coder", 10, 0.95));
    daemon.post_events(&usage("u2", "coder", 10, 0.10));
    let first = received.recv_timeout(SETTLE).expect("warning delivered");
    let second = received.recv_timeout(SETTLE).expect("exceeded delivered");
    assert_eq!(first["event"], "budget_warning");
    assert_eq!(second["event"], "BUDGET_EXCEEDED");
    assert_eq!(second["budget"], "usd");
    assert_eq!(second["limit"], 1.0);
    assert!(
        second["used"]
            .as_f64()
            .is_some_and(|u| (u - 1.05).abs() < 1e-9)
    );
    daemon.post_events(&usage("u3", "coder", 10, 0.10));
    assert!(
        received.recv_timeout(Duration::from_millis(500)).is_err(),
        "no transition, no notification"
    );
}

#[test]
fn budget_states_survive_a_restart_without_firing_again() {
    let daemon = Daemon::start(
        "[[budget]]\nname = \"usd\"\nresource = \"usd\"\nlimit = 1.0\non_exceed = \"alert\"\n",
    );
    daemon.post_events(&usage("u1", "coder", 10, 2.0));
    wait_for("the exceeded log line", SETTLE, || {
        (daemon.log_count("\"event\":\"BUDGET_EXCEEDED\"") == 1).then_some(())
    });
    let daemon = daemon.restart(libc::SIGTERM);
    let labels = [("budget", "usd"), ("resource", "usd")];
    daemon.wait_metric("haios_budget_state", &labels, SETTLE, |v| v == 2.0);
    assert_eq!(
        daemon.scrape().value("haios_budget_used", &labels),
        Some(2.0)
    );
    assert_eq!(
        daemon.log_count("BUDGET_EXCEEDED"),
        0,
        "announced once, before the restart"
    );
}

#[test]
fn exec_forwards_signals_to_the_command() {
    let dir = scratch_dir();
    let marker = dir.path().join("got-usr1");
    let script = format!(
        "trap 'echo usr1 > {}' USR1; trap 'exit 3' TERM; while :; do sleep 0.05; done",
        marker.display()
    );
    let mut daemon = Daemon::builder().exec(&["sh", "-c", &script]).start();
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    daemon.signal(libc::SIGUSR1);
    wait_for("the command's USR1 handler", SETTLE, || {
        std::fs::read_to_string(&marker).ok()
    });
    daemon.signal(libc::SIGTERM);
    assert_eq!(
        daemon.wait_exit(SETTLE).code(),
        Some(3),
        "SIGTERM went to the command, whose status is ours"
    );
}

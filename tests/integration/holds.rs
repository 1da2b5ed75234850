//! Exceeded is a state: while a hard budget is exceeded, every process of a target in its
//! scope is stopped whenever it appears — a new session, a relaunch, a child born during the
//! kill — and after a restart of costmeter too.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Daemon, Workload, alive, costmeter_bin, require_tool, wait_for};

const SETTLE: Duration = Duration::from_secs(20);
const EXIT_BUDGET_KILLED: i32 = 86;

fn tokens(id: &str, count: u64) -> Value {
    json!({"type": "llm_usage", "event_id": id, "agent": "coder", "model": "gpt-5",
           "input_tokens": count, "output_tokens": 0})
}

#[test]
fn an_exceeded_budget_stops_every_new_session_and_holds_across_a_restart() {
    let marker = format!("held-session-{}", std::process::id());
    let session = || Workload::shell(&format!("while :; do sleep 0.05; done # {marker}"));
    let first = session();
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\nmatch = {{ cmdline = \"{marker}\" }}\nsample_interval = \"100ms\"\n\n\
         [budgets]\ntokens = 1000\n\n[enforcement]\ngrace = \"2s\"\n"
    ));
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    daemon.post_events(&tokens("u1", 1500));
    wait_for("the first session to be stopped", SETTLE, || {
        (!alive(first.pid())).then_some(())
    });

    // A new session after the crossing: no transition is left to fire, the state holds.
    let second = session();
    wait_for("the second session to be stopped", SETTLE, || {
        (!alive(second.pid())).then_some(())
    });
    daemon.wait_metric(
        "haios_soft_kills_total",
        &[("target", "agent"), ("signal", "SIGTERM")],
        SETTLE,
        |v| v >= 2.0,
    );
    assert_eq!(daemon.log_count("\"event\":\"BUDGET_EXCEEDED\""), 1);

    // Usage that arrives while exceeded is stored and counted all the same.
    let answer = daemon.post_events(&tokens("u2", 10));
    assert_eq!(answer["accepted"], 1, "{answer}");

    // After a restart the state is rebuilt from the store: a third session is stopped too.
    let daemon = daemon.restart(libc::SIGTERM);
    let third = session();
    wait_for("the third session to be stopped", SETTLE, || {
        (!alive(third.pid())).then_some(())
    });
    daemon.wait_metric(
        "haios_soft_kills_total",
        &[("target", "agent"), ("signal", "SIGTERM")],
        SETTLE,
        |v| v >= 1.0,
    );
    let (_, _, budgets) = daemon.get("/v1/budgets", None);
    let budgets: Value = serde_json::from_str(&budgets).expect("budgets JSON");
    assert_eq!(budgets["budgets"][0]["state"], "exceeded", "{budgets}");
    assert_eq!(budgets["budgets"][0]["used"], 1510.0, "{budgets}");
}

#[test]
fn exec_into_an_exhausted_budget_exits_86_without_starting_the_command() {
    let mut daemon = Daemon::builder()
        .config("[budgets]\ntokens = 1000\n\n[enforcement]\ngrace = \"1s\"\n")
        .exec(&["sh", "-c", "while :; do sleep 0.05; done"])
        .start();
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    daemon.post_events(&tokens("u1", 1500));
    assert_eq!(daemon.wait_exit(SETTLE).code(), Some(EXIT_BUDGET_KILLED));

    // The same config and store, as a supervisor would relaunch it: the command never runs,
    // and the answer is the same every time.
    let created = daemon.dir.path().join("started");
    for attempt in 0..2 {
        let out = Command::new(costmeter_bin())
            .arg("exec")
            .arg("--config")
            .arg(&daemon.config_path)
            .arg("--")
            .arg("touch")
            .arg(&created)
            .current_dir(daemon.dir.path())
            .env("COSTMETER_LOG", "info")
            .output()
            .expect("run costmeter exec");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_BUDGET_KILLED), "{stderr}");
        assert!(!created.exists(), "attempt {attempt}: the command ran");
        assert!(
            stderr.contains(
                "costmeter: budget 'lifetime-tokens' is exceeded: 1500 tokens used of 1000 tokens; a lifetime budget does not reset: raise its limit; 'touch' was not started (exit status 86)"
            ),
            "{stderr}"
        );
    }
}

/// The late-comer blocks SIGTERM from its birth until its handler is in place, so the test
/// sees every SIGTERM it is sent, however early.
const LATE_COMER: &str = r#"
import os, signal, sys, time
go, ready, mark = sys.argv[1:4]
signal.signal(signal.SIGTERM, lambda *a: None)
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
time.sleep(0.2)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
if os.fork() == 0:
    def on_term(*_):
        open(mark, "w").write("term")
        os._exit(0)
    signal.signal(signal.SIGTERM, on_term)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    while True:
        time.sleep(0.05)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
while True:
    time.sleep(0.05)
"#;

#[test]
fn a_process_born_during_the_soft_kill_gets_the_polite_signal_and_its_grace() {
    let Some(python) = require_tool("python3", "Debian package python3") else {
        return;
    };
    let dir = crate::util::scratch_dir();
    let (go, ready, mark) = (
        dir.path().join("go"),
        dir.path().join("ready"),
        dir.path().join("late-got-term"),
    );
    let script = dir.path().join("late.py");
    std::fs::write(&script, LATE_COMER).expect("write script");
    // The root answers SIGTERM by telling the spawner to start a late-comer, and lives on.
    let root = format!(
        "trap 'touch {go}' TERM; {python} {script} {go} {ready} {mark} & while :; do sleep 0.05; done",
        go = go.display(),
        script = script.display(),
        ready = ready.display(),
        mark = mark.display(),
    );
    let mut daemon = Daemon::builder()
        .config("[budgets]\ntokens = 1000\n\n[enforcement]\ngrace = \"3s\"\n")
        .exec(&["sh", "-c", &root])
        .start();
    wait_for("the spawner to be ready", SETTLE, || {
        ready.exists().then_some(())
    });
    daemon.post_events(&tokens("u1", 1500));
    assert_eq!(daemon.wait_exit(SETTLE).code(), Some(EXIT_BUDGET_KILLED));
    assert!(go.exists(), "the root got SIGTERM");
    assert_eq!(
        std::fs::read_to_string(&mark).unwrap_or_default(),
        "term",
        "the process born during the kill got SIGTERM before the SIGKILL"
    );
    wait_for("the late SIGTERM to be logged", SETTLE, || {
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("processes that joined the tree got the signal"))
            .then_some(())
    });
}

/// An Alertmanager webhook payload with one alert.
fn alert(status: &str, labels: Value) -> Vec<u8> {
    json!({
        "version": "4", "status": status, "receiver": "costmeter",
        "alerts": [{"status": status, "labels": labels, "annotations": {},
                    "startsAt": "2026-12-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "", "fingerprint": "fleet-0001"}],
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "groupKey": "{}", "truncatedAlerts": 0
    })
    .to_string()
    .into_bytes()
}

#[test]
fn a_firing_alert_holds_its_target_until_it_resolves_and_acts_only_on_the_instance_it_names() {
    let marker = format!("alert-held-{}", std::process::id());
    let session = || Workload::shell(&format!("while :; do sleep 0.05; done # {marker}"));
    let first = session();
    let daemon = Daemon::start(&format!(
        "[fleet]\ninstance = \"host-a:8000\"\n\n\
         [[target]]\nname = \"agent\"\nmatch = {{ cmdline = \"{marker}\" }}\nsample_interval = \"100ms\"\n\n\
         [enforcement]\ngrace = \"2s\"\n"
    ));
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    // Another sidecar's alert, sent to a receiver that lists every sidecar: ignored here.
    let labels = |instance: Option<&str>| {
        let mut labels = json!({"alertname": "BudgetExceeded", "costmeter_action": "soft_kill", "target": "agent"});
        if let Some(instance) = instance {
            labels["instance"] = json!(instance);
        }
        labels
    };
    let (status, answer) = daemon.post(
        "/v1/alerts",
        "application/json",
        &alert("firing", labels(Some("host-b:8000"))),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["ignored"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("instance 'host-b:8000' is not this sidecar")),
        "{answer}"
    );
    assert!(answer["actions"].as_array().is_some_and(Vec::is_empty));

    // The fleet's alert (no instance: summed over every sidecar) stops the agent here...
    let (status, answer) = daemon.post(
        "/v1/alerts",
        "application/json",
        &alert("firing", labels(None)),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["actions"][0]["action"], "soft_kill", "{answer}");
    wait_for("the first session to be stopped", SETTLE, || {
        (!alive(first.pid())).then_some(())
    });
    assert!(alive(std::process::id() as i32));
    // ...and holds it stopped while it fires: a relaunched agent is stopped again, without
    // waiting for Alertmanager's repeat_interval.
    let second = session();
    wait_for("the relaunched session to be stopped", SETTLE, || {
        (!alive(second.pid())).then_some(())
    });

    // Resolved: the hold ends, a new session runs.
    let (status, answer) = daemon.post(
        "/v1/alerts",
        "application/json",
        &alert("resolved", labels(None)),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["actions"][0]["action"], "release", "{answer}");
    let third = session();
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    // Holds are judged with every batch, before its answer: after batches that follow readings
    // of the new session, no kill was ordered for it.
    let ordered = daemon.log_count("soft-kill ordered");
    for tick in 0..3 {
        daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
            v == 1.0
        });
        let _ = daemon.post_events(&tokens(&format!("tick-{tick}"), 1));
    }
    assert!(alive(third.pid()), "a resolved alert holds nothing");
    assert_eq!(daemon.log_count("soft-kill ordered"), ordered);
    assert_eq!(
        daemon.log_count("SIGKILL sent to processes that outlived the grace"),
        0
    );
}

#[test]
fn an_alert_ordered_kill_of_the_exec_command_exits_86_naming_the_alert() {
    let mut daemon = Daemon::builder()
        .config("[enforcement]\ngrace = \"2s\"\n")
        .exec(&["sh", "-c", "while :; do sleep 0.05; done"])
        .start();
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    let labels = json!({"alertname": "FleetBudgetExceeded", "costmeter_action": "soft_kill", "target": "agent"});
    let (status, answer) = daemon.post("/v1/alerts", "application/json", &alert("firing", labels));
    assert_eq!(status, 200, "{answer}");
    let exit = daemon.wait_exit(SETTLE);
    assert_eq!(exit.code(), Some(EXIT_BUDGET_KILLED), "{:?}", daemon.logs());
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("alert 'FleetBudgetExceeded' firing; the command was stopped")),
        "{:?}",
        daemon.logs()
    );
    assert_eq!(
        daemon.log_count("SIGKILL sent to processes that outlived the grace"),
        0
    );
}

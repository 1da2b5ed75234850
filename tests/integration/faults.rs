//! Faults from outside: a full disk under the store, a corrupt or foreign store file, and the
//! enforcement side (a webhook that hangs, a target dying while it is stopped, a pid file
//! pointing at someone else's process).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::util::{Daemon, costmeter_bin, scratch_dir, wait_for};

const SETTLE: Duration = Duration::from_secs(20);

/// A small tmpfs, unmounted when dropped. `None` (the test skips) where mounting is not
/// allowed, unless `COSTMETER_REQUIRE_TOOLS` is set.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = scratch_dir();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(
                std::env::var_os("COSTMETER_REQUIRE_TOOLS").is_none(),
                "mounting a tmpfs is required for the disk-fault tests (run as root)"
            );
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    // dd stops at ENOSPC with a failure status; the file then holds all the space there was.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    filler
}

fn usage(id: &str) -> serde_json::Value {
    json!({"type": "llm_usage", "event_id": id, "agent": "coder", "model": "gpt-4o",
           "input_tokens": 1000, "output_tokens": 100})
}

#[test]
fn a_full_disk_answers_503_keeps_serving_metrics_and_recovers_by_itself() {
    let Some(disk) = Tmpfs::mount("2m") else {
        return;
    };
    let daemon = Daemon::start(&format!(
        "[store]\npath = \"{}/costmeter.db\"\n",
        disk.path.display()
    ));
    daemon.post_events(&json!([usage("before-1"), usage("before-2")]));
    let filler = fill(&disk.path);

    // Writes fail once SQLite needs a page it cannot get; keep writing until it does.
    let mut refused = None;
    for n in 0..2_000 {
        let batch: Vec<_> = (0..50).map(|i| usage(&format!("full-{n}-{i}"))).collect();
        let (status, answer) = daemon.post(
            "/v1/events",
            "application/json",
            serde_json::Value::Array(batch).to_string().as_bytes(),
        );
        if status != 202 {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refused.expect("a full disk refuses writes");
    assert_eq!(status, 503, "{answer}");
    eprintln!("full disk answer: {answer}");
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("the store cannot take writes") && message.contains("retry"),
        "{message}"
    );
    // OTLP exporters get the retryable 503 too.
    let span = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
    "traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "name": "chat",
    "attributes": [
        {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
        {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}},
        {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "1"}}
    ]}]}]}]});
    let (status, answer) = daemon.post(
        "/v1/traces",
        "application/json",
        span.to_string().as_bytes(),
    );
    assert_eq!(status, 503, "{answer}");
    let (status, _, body) = daemon.get("/metrics", None);
    assert_eq!(status, 200, "/metrics keeps serving");
    assert!(body.contains("haios_build_info"));
    let (status, _, ready) = daemon.get("/readyz", None);
    assert_eq!(status, 503, "readiness says the store is failing: {ready}");
    assert!(ready.contains("store"), "{ready}");

    std::fs::remove_file(&filler).expect("free the space");
    let accepted = wait_for("writes to succeed again", SETTLE, || {
        let (status, answer) = daemon.post(
            "/v1/events",
            "application/json",
            usage("after").to_string().as_bytes(),
        );
        (status == 202).then_some(answer)
    });
    assert_eq!(accepted["accepted"], 1);
    wait_for("readiness to recover", SETTLE, || {
        (daemon.get("/readyz", None).0 == 200).then_some(())
    });
    // What was acknowledged before the fault is still there.
    let again = daemon.post_events(&json!([usage("before-1"), usage("before-2")]));
    assert_eq!(again["duplicates"], 2, "{again}");
}

fn start_on_store(store: &Path) -> std::process::Output {
    let dir = scratch_dir();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"{}\"\n",
            store.display()
        ),
    )
    .expect("config");
    Command::new(costmeter_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("costmeter runs")
}

#[test]
fn a_corrupt_or_foreign_store_is_refused_at_start_and_left_untouched() {
    let dir = scratch_dir();
    let corrupt = dir.path().join("corrupt.db");
    let garbage: Vec<u8> = (0..16_384u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&corrupt, &garbage).expect("write");
    let output = start_on_store(&corrupt);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("corrupt.db") && stderr.contains("move it away"),
        "the message names the file and what to do: {stderr}"
    );
    assert_eq!(
        std::fs::read(&corrupt).expect("read"),
        garbage,
        "never replaced"
    );

    let foreign = dir.path().join("foreign.db");
    let status = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c = sqlite3.connect('{}'); c.execute('create table notes (x)'); c.commit()",
            foreign.display()
        ))
        .status()
        .expect("python3 runs");
    assert!(status.success());
    let before = std::fs::read(&foreign).expect("read");
    let output = start_on_store(&foreign);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a costmeter store") && stderr.contains("left untouched"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&foreign).expect("read"), before);
}

/// A webhook receiver that takes each request and never answers. Reports when a request
/// arrived, and whether its connection is still open.
fn hanging_webhook() -> (
    String,
    std::sync::mpsc::Receiver<()>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (arrived, arrivals) = std::sync::mpsc::channel();
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let closed_count = closed.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let arrived = arrived.clone();
            let closed = closed_count.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                let mut told = false;
                // Read until the client gives up; never write a byte back.
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0 {
                        break;
                    }
                    if !told {
                        told = true;
                        let _ = arrived.send(());
                    }
                }
                closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
    });
    (url, arrivals, closed)
}

#[test]
fn a_webhook_that_never_answers_does_not_delay_ingestion() {
    let (url, arrivals, closed) = hanging_webhook();
    let daemon = Daemon::start(&format!(
        "[[budget]]\nname = \"usd\"\nresource = \"usd\"\nlimit = 0.001\non_exceed = \"alert\"\n\n[enforcement]\nwebhook = \"{url}\"\n"
    ));
    // $0.0035 of gpt-4o crosses the limit: the transition goes to the webhook.
    daemon.post_events(&usage("cross"));
    arrivals
        .recv_timeout(SETTLE)
        .expect("the webhook was called");
    // The webhook holds its connection open without answering; ingestion goes on meanwhile.
    for n in 0..200 {
        let answer = daemon.post_events(&usage(&format!("more-{n}")));
        assert_eq!(answer["accepted"], 1);
    }
    assert_eq!(
        closed.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "every event was answered while the webhook call was still hanging"
    );
    assert_eq!(
        daemon.scrape().value(
            "haios_events_total",
            &[
                ("source", "http"),
                ("type", "llm_usage"),
                ("result", "accepted")
            ]
        ),
        Some(201.0)
    );
}

/// A process owned by `uid`, for pid files that must not be trusted.
fn sleeper_as(uid: u32) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    Command::new("sleep")
        .arg("300")
        .uid(uid)
        .spawn()
        .expect("spawn sleep")
}

#[test]
fn a_pid_file_naming_another_user_s_process_is_refused_and_never_signalled() {
    // Only root can hand files and processes to other users.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create processes and files of two users");
        return;
    }
    let dir = scratch_dir();
    let mut victim = sleeper_as(0);
    let pid_file = dir.path().join("agent.pid");
    std::fs::write(&pid_file, format!("{}\n", victim.id())).expect("pid file");
    // The pid file belongs to "nobody", the process it names to root.
    std::os::unix::fs::chown(&pid_file, Some(65_534), Some(65_534)).expect("chown");
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid_file = \"{}\"\nsample_interval = \"20ms\"\n\n\
         [budgets]\ntokens = 10\n[enforcement]\ngrace = \"200ms\"\n",
        pid_file.display()
    ));
    wait_for("the refusal in the log", SETTLE, || {
        (daemon.log_count("refused as an unrelated process") > 0).then_some(())
    });
    let up = daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 0.0
    });
    assert_eq!(up, 0.0, "not metered");
    // The budget fires; the process the pid file names is left alone.
    daemon.post_events(&usage("over"));
    wait_for("the soft-kill to be reported", SETTLE, || {
        (daemon.log_count("soft-kill: signal sent") > 0).then_some(())
    });
    assert!(
        victim.try_wait().expect("wait").is_none(),
        "the other user's process is still alive"
    );
    victim.kill().ok();
    victim.wait().ok();

    // The same pid file owned by the process's user is trusted.
    let mut own = sleeper_as(65_534);
    std::fs::write(&pid_file, format!("{}\n", own.id())).expect("pid file");
    std::os::unix::fs::chown(&pid_file, Some(65_534), Some(65_534)).expect("chown");
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    own.kill().ok();
    own.wait().ok();
}

#[test]
fn a_target_whose_processes_die_while_it_is_stopped_is_handled() {
    let dir = scratch_dir();
    let pid_file = dir.path().join("agent.pid");
    let child_file = dir.path().join("child.pid");
    // A root that churns out short-lived children (some die between the scan and their
    // signal) and leaves on SIGTERM, and a child that ignores SIGTERM until SIGKILL.
    let mut agent = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap 'exit 0' TERM; (trap '' TERM; exec sleep 300) & echo $! > {}; while :; do true & true & sleep 0.001; done",
            child_file.display()
        ))
        .spawn()
        .expect("spawn agent");
    std::fs::write(&pid_file, format!("{}\n", agent.id())).expect("pid file");
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid_file = \"{}\"\nsample_interval = \"20ms\"\n\n\
         [budgets]\ntokens = 10\n[enforcement]\ngrace = \"300ms\"\n",
        pid_file.display()
    ));
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    let child: i32 = wait_for("the child's pid", SETTLE, || {
        std::fs::read_to_string(&child_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    });
    // The sampler must have seen the tree with its child (it is started before the churn), so
    // the child is known when its parent's exit orphans it.
    daemon.wait_metric(
        "haios_target_processes",
        &[("target", "agent")],
        SETTLE,
        |v| v >= 2.0,
    );
    daemon.post_events(&usage("over"));
    let status = wait_for("the agent to go", SETTLE, || {
        agent.try_wait().ok().flatten()
    });
    assert!(status.success() || status.code().is_none(), "{status}");
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 0.0
    });
    // The SIGTERM-proof child was SIGKILLed after the grace; the daemon carries on.
    wait_for("the SIGTERM-proof child to be gone", SETTLE, || {
        let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let state = state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        matches!(state, None | Some("Z") | Some("X")).then_some(())
    });
    assert_eq!(daemon.get("/healthz", None).0, 200);
    assert!(
        daemon
            .scrape()
            .value(
                "haios_soft_kills_total",
                &[("target", "agent"), ("signal", "SIGTERM")]
            )
            .is_some_and(|v| v >= 1.0)
    );
}

#[test]
fn a_second_daemon_on_the_same_store_and_an_empty_store_file_are_refused_at_start() {
    let daemon = crate::util::Daemon::start("");
    daemon.wait_ready();
    let second = std::process::Command::new(crate::util::costmeter_bin())
        .arg("run")
        .arg("--config")
        .arg(&daemon.config_path)
        .current_dir(daemon.dir.path())
        .output()
        .expect("run a second daemon");
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use by another costmeter"), "{stderr}");

    let dir = crate::util::scratch_dir();
    std::fs::write(dir.path().join("costmeter.db"), b"").expect("empty store");
    let empty = std::process::Command::new(crate::util::costmeter_bin())
        .arg("run")
        .current_dir(dir.path())
        .output()
        .expect("run on an empty store");
    assert_eq!(empty.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(stderr.contains("is an empty file (0 bytes)"), "{stderr}");
    assert_eq!(
        std::fs::metadata(dir.path().join("costmeter.db"))
            .expect("still there")
            .len(),
        0,
        "left untouched"
    );
}

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

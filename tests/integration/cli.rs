//! The command line: `check-config` on fixture files, `run` refusing a bad config, and reload.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::util::{Daemon, Workload, costmeter_bin, write};

fn check_config(path: &Path) -> (i32, String, String) {
    let output = Command::new(costmeter_bin())
        .arg("check-config")
        .arg(path)
        .output()
        .expect("run check-config");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn fixtures(dir: &str) -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .expect("fixture dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
}

#[test]
fn every_valid_fixture_and_shipped_example_passes_check_config() {
    let mut files = fixtures("tests/valid_configs");
    // config/ also holds the price baseline, which is not a costmeter config.
    files.extend(
        fixtures("config")
            .into_iter()
            .filter(|f| f.to_string_lossy().ends_with(".example.toml")),
    );
    for file in files {
        let (code, stdout, stderr) = check_config(&file);
        assert_eq!(code, 0, "{}: {stderr}", file.display());
        assert!(stdout.contains(": ok"), "{stdout}");
    }
}

/// Each invalid fixture starts with `# expect: <text>` lines; every one must appear in the
/// error output, which must also name the file with a line and column.
#[test]
fn every_invalid_fixture_fails_with_its_message() {
    for file in fixtures("tests/invalid_configs") {
        let text = std::fs::read_to_string(&file).expect("read fixture");
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no '# expect:' line",
            file.display()
        );
        let (code, _, stderr) = check_config(&file);
        assert_eq!(code, 2, "{} must be refused: {stderr}", file.display());
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{}: expected {needle:?} in:\n{stderr}",
                file.display()
            );
        }
        let location = format!("{}:", file.display());
        assert!(stderr.contains(&location), "errors name the file: {stderr}");
    }
}

#[test]
fn run_refuses_a_bad_config_before_listening() {
    let dir = crate::util::scratch_dir();
    let config = dir.path().join("bad.toml");
    write(&config, "[server]\nlisten = \"127.0.0.1:0\"\nlistne = 1\n");
    let output = Command::new(costmeter_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run costmeter");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:3:1: unknown field `listne`"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn sighup_applies_a_good_config_and_keeps_the_old_one_on_a_bad_one() {
    let sleeper = Workload::shell("exec sleep 600");
    let daemon = Daemon::start("");
    daemon.wait_metric(
        "haios_target_up",
        &[("target", "costmeter")],
        Duration::from_secs(10),
        |v| v == 1.0,
    );

    let good = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[target]]\nname = \"sleeper\"\npid = {}\nsample_interval = \"50ms\"\n",
        sleeper.pid()
    );
    write(&daemon.config_path, &good);
    daemon.signal(libc::SIGHUP);
    daemon.wait_metric(
        "haios_target_up",
        &[("target", "sleeper")],
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let scrape = daemon.scrape();
    assert_eq!(
        scrape.value("haios_target_up", &[("target", "costmeter")]),
        None,
        "the dropped target's gauges go"
    );

    write(&daemon.config_path, "[[target]]\nname = \"x\"\n");
    daemon.signal(libc::SIGHUP);
    crate::util::wait_for(
        "the failed reload to be logged",
        Duration::from_secs(10),
        || (daemon.log_count("config reload failed") == 1).then_some(()),
    );
    assert!(
        daemon
            .logs()
            .iter()
            .any(|l| l.contains("give exactly one selector")),
        "the log says why"
    );
    let scrape = daemon.scrape();
    assert_eq!(
        scrape.value("haios_target_up", &[("target", "sleeper")]),
        Some(1.0),
        "old config still runs"
    );
    assert!(daemon.stop().success());
}

#[test]
fn post_reload_applies_a_good_file_and_explains_a_bad_one() {
    let sleeper = Workload::shell("exec sleep 600");
    let daemon = Daemon::start("");
    let good = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[[target]]\nname = \"sleeper\"\npid = {}\nsample_interval = \"50ms\"\n",
        sleeper.pid()
    );
    write(&daemon.config_path, &good);
    let (status, answer) = daemon.post("/v1/reload", "application/json", b"");
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 target")),
        "{answer}"
    );
    daemon.wait_metric(
        "haios_target_up",
        &[("target", "sleeper")],
        Duration::from_secs(10),
        |v| v == 1.0,
    );

    write(
        &daemon.config_path,
        "[server]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n",
    );
    let (status, answer) = daemon.post("/v1/reload", "application/json", b"");
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("unknown field `bogus`") && error.contains("the running config stays"),
        "{error}"
    );
    assert_eq!(
        daemon
            .scrape()
            .value("haios_target_up", &[("target", "sleeper")]),
        Some(1.0)
    );
}

/// Every ```toml block of README, as a reader copies it.
fn readme_toml_blocks() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|part| part.split_once("\n```").map(|(block, _)| block.to_string()))
        .collect()
}

#[test]
fn every_toml_example_in_readme_passes_check_config() {
    let blocks = readme_toml_blocks();
    assert!(blocks.len() >= 3, "README has its configuration examples");
    let dir = crate::util::scratch_dir();
    for (index, block) in blocks.iter().enumerate() {
        let path = dir.path().join(format!("readme-{index}.toml"));
        std::fs::write(&path, block).expect("write block");
        let output = std::process::Command::new(crate::util::costmeter_bin())
            .arg("check-config")
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .expect("run check-config");
        assert!(
            output.status.success(),
            "README's TOML block {index} fails check-config:\n{block}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

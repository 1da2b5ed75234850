//! The agent-facing verbs through the real binary: Claude Code's statusline and hook fed its
//! documented JSON, and `setup --write` merging into settings files.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::util::{Daemon, costmeter_bin};

/// Claude Code's statusline input, as its statusline docs show it.
const STATUSLINE_JSON: &str = r#"{"hook_event_name":"Status","session_id":"abc123","transcript_path":"/tmp/t.jsonl","cwd":"/src","model":{"id":"claude-opus-4-8","display_name":"Opus"},"workspace":{"current_dir":"/src","project_dir":"/src"},"version":"2.1.197","output_style":{"name":"default"},"cost":{"total_cost_usd":0.4512,"total_duration_ms":45000,"total_api_duration_ms":2300,"total_lines_added":156,"total_lines_removed":23}}"#;
/// A PreToolUse hook input, as its hooks docs show it.
const PRE_TOOL_USE_JSON: &str = r#"{"session_id":"abc123","transcript_path":"/tmp/t.jsonl","cwd":"/src","hook_event_name":"PreToolUse","tool_name":"Write","tool_input":{"file_path":"/src/a.txt","content":"x"}}"#;

fn verb(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut child = Command::new(costmeter_bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("COSTMETER_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("costmeter");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("output");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn usage(id: &str, agent: &str, usd: f64) -> Value {
    json!({"type": "llm_usage", "event_id": id, "agent": agent, "model": "claude-sonnet-4-5",
        "input_tokens": 1000, "output_tokens": 100, "cost_usd": usd})
}

const BUDGETS: &str = "[[budget]]\nname = \"cc-usd\"\nresource = \"usd\"\nlimit = 10.0\nagent = \"claude-code\"\non_exceed = \"soft_kill\"\n\
     [[budget]]\nname = \"all-tokens\"\nresource = \"tokens\"\nlimit = 1000000\non_exceed = \"alert\"\n";

#[test]
fn the_statusline_shows_spend_the_tightest_budget_and_the_session_and_never_fails() {
    let daemon = Daemon::start(BUDGETS);
    daemon.post_events(&usage("u1", "claude-code", 9.2));
    let url = daemon.url("");
    let (code, line, _) = verb(
        &["statusline", "--url", &url],
        STATUSLINE_JSON,
        &[("NO_COLOR", "1")],
    );
    assert_eq!(code, 0);
    assert_eq!(
        line.trim(),
        "costmeter $9.20 24h · cc-usd $9.20/$10.00 92% · session $0.45 · Opus"
    );
    // In colour, the warning state is yellow.
    let (_, coloured, _) = verb(&["statusline", "--url", &url], STATUSLINE_JSON, &[]);
    assert!(
        coloured.contains("\x1b[33mcc-usd $9.20/$10.00 92%\x1b[0m"),
        "{coloured:?}"
    );
    // Not JSON on stdin, and no daemon: still one line, exit 0.
    let (code, line, _) = verb(
        &["statusline", "--url", "http://127.0.0.1:1"],
        "not json",
        &[("NO_COLOR", "1")],
    );
    assert_eq!((code, line.trim()), (0, "costmeter unreachable"));
}

#[test]
fn the_hook_blocks_with_exit_2_once_a_hard_budget_is_exceeded_and_warns_before() {
    let daemon = Daemon::start(BUDGETS);
    let url = daemon.url("");
    let hook = |env: &[(&str, &str)]| {
        verb(
            &["hook", "claude-code", "--url", &url],
            PRE_TOOL_USE_JSON,
            env,
        )
    };
    assert_eq!(hook(&[]), (0, String::new(), String::new()));

    daemon.post_events(&usage("u1", "claude-code", 9.5));
    let (code, stdout, _) = hook(&[]);
    assert_eq!(code, 0);
    let message: Value = serde_json::from_str(&stdout).expect("hook JSON output");
    let text = message["systemMessage"].as_str().expect("systemMessage");
    assert!(
        text.contains("budget 'cc-usd' is at 95%") && text.contains("this agent is stopped"),
        "{text}"
    );

    daemon.post_events(&usage("u2", "claude-code", 1.0));
    let (code, stdout, stderr) = hook(&[]);
    assert_eq!(code, 2, "{stdout} {stderr}");
    assert!(
        stderr.contains("budget 'cc-usd' is exceeded: $10.50 used of $10.00"),
        "{stderr}"
    );
    // Another agent is not held by claude-code's budget.
    let (code, _, _) = hook(&[("COSTMETER_AGENT", "reviewer")]);
    assert_eq!(code, 0);
    // No daemon: the call is not blocked.
    let (code, _, stderr) = verb(
        &["hook", "claude-code", "--url", "http://127.0.0.1:1"],
        PRE_TOOL_USE_JSON,
        &[],
    );
    assert_eq!(code, 0);
    assert!(stderr.contains("not blocking"), "{stderr}");
}

#[test]
fn setup_write_merges_into_settings_keeps_other_keys_and_creates_missing_files() {
    let daemon = Daemon::start("[proxy]\nenabled = true\n");
    let url = daemon.url("");
    let dir = crate::util::scratch_dir();
    let settings = dir.path().join("settings.json");
    std::fs::write(
        &settings,
        r#"{"model": "opus", "permissions": {"allow": ["Bash(ls)"]}, "env": {"FOO": "1"}}"#,
    )
    .expect("settings");
    let file = settings.to_str().expect("path");
    let (code, stdout, stderr) = verb(
        &[
            "setup",
            "claude-code",
            "--url",
            &url,
            "--write",
            "--file",
            file,
        ],
        "",
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("merged into"), "{stdout}");
    let merged: Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).expect("read")).expect("JSON");
    assert_eq!(merged["model"], "opus");
    assert_eq!(merged["permissions"]["allow"][0], "Bash(ls)");
    assert_eq!(merged["env"]["FOO"], "1");
    assert_eq!(
        merged["env"]["ANTHROPIC_BASE_URL"],
        format!("{url}/proxy/anthropic"),
        "the daemon's proxy is on"
    );
    assert_eq!(
        merged["hooks"]["PreToolUse"][0]["hooks"][0]["command"],
        format!("costmeter hook claude-code --url {url}")
    );
    let backup = dir.path().join("settings.json.costmeter-backup");
    assert!(
        std::fs::read_to_string(backup)
            .expect("backup")
            .contains("\"opus\"")
    );

    // A missing Codex config is created, as TOML.
    let codex = dir.path().join("codex/config.toml");
    let (code, _, stderr) = verb(
        &[
            "setup",
            "codex",
            "--url",
            &url,
            "--write",
            "--file",
            codex.to_str().expect("path"),
        ],
        "",
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    let table: toml::Table =
        toml::from_str(&std::fs::read_to_string(&codex).expect("created")).expect("TOML");
    assert_eq!(table["model_provider"].as_str(), Some("costmeter"));
    assert_eq!(
        table["model_providers"]["costmeter"]["base_url"].as_str(),
        Some(format!("{url}/proxy/openai/v1").as_str())
    );

    // Printing only, for OTLP: Gemini CLI's telemetry settings.
    let (code, stdout, _) = verb(
        &["setup", "gemini-cli", "--url", &url, "--route", "otlp"],
        "",
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("\"otlpEndpoint\": \"{url}/v1/otlp\"")),
        "{stdout}"
    );
}

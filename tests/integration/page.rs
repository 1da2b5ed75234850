//! The status page in a real headless Chromium (Debian's `chromium`): it loads without console
//! errors, shows the budget states pushed in, and is captured at desktop and phone widths under
//! `target/` for a person to look at.

use serde_json::json;

use crate::util::Daemon;

fn chromium() -> Option<&'static str> {
    crate::util::require_tool("chromium", "apt-get install chromium")
}

/// Runs headless Chromium; returns (stdout, stderr).
fn headless(browser: &str, profile: &std::path::Path, args: &[String]) -> (String, String) {
    let output = crate::util::headless_chromium(browser, profile, args);
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_status_page_renders_budget_states_in_a_real_browser() {
    let Some(browser) = chromium() else { return };
    let daemon = Daemon::start(
        "[[budget]]\nname = \"calm\"\nresource = \"usd\"\nlimit = 100.0\non_exceed = \"alert\"\n\n\
         [[budget]]\nname = \"close\"\nresource = \"usd\"\nlimit = 1.0\nagent = \"coder\"\non_exceed = \"alert\"\n\n\
         [[budget]]\nname = \"over\"\nresource = \"tokens\"\nlimit = 100\non_exceed = \"alert\"\n",
    );
    daemon.wait_ready();
    daemon.post_events(&json!([
        {"type": "llm_usage", "agent": "coder", "model": "gpt-5", "input_tokens": 150, "output_tokens": 10, "cost_usd": 0.95},
        {"type": "run_start", "run_id": "run-x", "agent": "coder"},
        {"type": "run_end", "run_id": "run-x", "result": "failure", "failure_class": "tool", "error_summary": "<b>tests</b> failed"}
    ]));
    let url = daemon.url("/");
    let profile = crate::util::scratch_dir();

    let (dom, log) = headless(
        browser,
        profile.path(),
        &["--dump-dom".to_string(), url.clone()],
    );
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    for (budget, state) in [("calm", "ok"), ("close", "warning"), ("over", "exceeded")] {
        assert!(
            dom.contains(&format!("data-budget=\"{budget}\" data-state=\"{state}\"")),
            "budget {budget} shown as {state}:\n{dom}"
        );
    }
    assert!(
        dom.contains("&lt;b&gt;tests&lt;/b&gt; failed"),
        "error summaries are escaped"
    );
    assert!(dom.contains("href=\"/metrics\""));

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    for (name, size) in [("desktop", "1280,900"), ("phone", "390,844")] {
        let file = shots.join(format!("status-{name}.png"));
        let _ = std::fs::remove_file(&file);
        headless(
            browser,
            profile.path(),
            &[
                format!("--window-size={size}"),
                format!("--screenshot={}", file.display()),
                url.clone(),
            ],
        );
        let bytes = std::fs::read(&file).expect("a screenshot was written");
        assert!(bytes.starts_with(b"\x89PNG"), "{name} screenshot is a PNG");
    }
}

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

    screenshots(
        browser,
        profile.path(),
        &url,
        &[("status-desktop", "1280,900"), ("status-phone", "390,844")],
    );
}

/// Screenshots of `url` at each (name, window size), as PNG files in target/tmp/status-page/
/// for a person (and CI's artifacts) to look at.
fn screenshots(browser: &str, profile: &std::path::Path, url: &str, shots: &[(&str, &str)]) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    for (name, size) in shots {
        let file = dir.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&file);
        headless(
            browser,
            profile,
            &[
                format!("--window-size={size}"),
                format!("--screenshot={}", file.display()),
                url.to_string(),
            ],
        );
        let bytes = std::fs::read(&file).expect("a screenshot was written");
        assert!(bytes.starts_with(b"\x89PNG"), "{name} screenshot is a PNG");
    }
}

/// The part of `dom` from `<svg id="ID"` to its `</svg>`.
fn svg_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("figure {id} on the page:\n{dom}"));
    let end = dom[start..].find("</svg>").expect("the figure ends") + start;
    &dom[start..end]
}

#[test]
fn the_page_draws_a_day_of_usage_budgets_and_a_target_as_figures_in_a_real_browser() {
    let Some(browser) = chromium() else { return };
    let mut agent = crate::util::Workload::shell("echo up; while :; do :; done");
    agent.wait_line("up");
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid = {pid}\nsample_interval = \"200ms\"\n\n\
         [[budget]]\nname = \"daily\"\nresource = \"usd\"\nlimit = 5.0\nwindow = \"day\"\nagent = \"coder\"\non_exceed = \"alert\"\n\n\
         [[budget]]\nname = \"weekly-tokens\"\nresource = \"tokens\"\nlimit = 500000\nwindow = \"week\"\non_exceed = \"alert\"\n\n\
         [[budget]]\nname = \"memory\"\nresource = \"mem_bytes\"\nlimit = 1073741824\ntarget = \"agent\"\non_exceed = \"alert\"\n",
        pid = agent.pid()
    ));
    daemon.wait_ready();
    // A day of usage: the coder every hour, a reviewer every third, dated in the past.
    let now = jiff::Timestamp::now();
    let mut events = Vec::new();
    for hour in 0..24i64 {
        let ts = now
            .checked_sub(jiff::SignedDuration::from_mins(hour * 60 + 1))
            .expect("time");
        events.push(json!({"type": "llm_usage", "event_id": format!("c{hour}"), "ts": ts.to_string(),
            "agent": "coder", "model": "claude-sonnet-4-5", "input_tokens": 4000, "cache_read_tokens": 3000,
            "output_tokens": 500, "cost_usd": 0.05 * (1 + hour % 4) as f64}));
        if hour % 3 == 0 {
            events.push(json!({"type": "llm_usage", "event_id": format!("r{hour}"), "ts": ts.to_string(),
                "agent": "reviewer", "model": "gpt-5", "input_tokens": 1000, "output_tokens": 200, "cost_usd": 0.02}));
        }
    }
    daemon.post_events(&json!(events));
    let url = daemon.url("/");
    // Samples reach the store as the sampler writes them; wait for the target's figure.
    crate::util::wait_for(
        "the target's figures",
        std::time::Duration::from_secs(20),
        || {
            let (_, _, body) = daemon.get("/", None);
            body.contains("id=\"mem-0\"").then_some(())
        },
    );

    let profile = crate::util::scratch_dir();
    let (dom, log) = headless(
        browser,
        profile.path(),
        &["--dump-dom".to_string(), url.clone()],
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("CONSOLE") || l.contains("Uncaught")),
        "console messages:\n{log}"
    );

    // Spend by agent: 24 hourly columns, both agents stacked, exact figures on hover.
    let day = svg_of(&dom, "spend-24h");
    assert_eq!(day.matches("<g class=\"column\">").count(), 24);
    let coder = day.matches("data-series=\"coder\"").count();
    assert!(
        (23..=24).contains(&coder),
        "one coder segment an hour: {coder}"
    );
    assert!(day.matches("data-series=\"reviewer\"").count() >= 7);
    assert!(day.contains("<title>coder · "), "hover titles");
    assert!(day.contains(">$0</text>"), "a y axis with labels");
    assert!(day.contains("class=\"axis x\""), "an x axis with labels");
    let week = svg_of(&dom, "spend-7d");
    assert_eq!(week.matches("<g class=\"column\">").count(), 7);

    // Burn-down of each spend budget: the used line, the limit and warning lines, and for a
    // calendar window the projection to its end. The memory budget is drawn on the target.
    for budget in ["daily", "weekly-tokens"] {
        let start = dom
            .find(&format!("<figure class=\"burn\" data-budget=\"{budget}\""))
            .unwrap_or_else(|| panic!("a burn-down of {budget}"));
        let figure = &dom[start..start + dom[start..].find("</figure>").expect("closed")];
        assert!(
            figure.contains("<path class=\"used\" d=\"M"),
            "{budget}: used line"
        );
        assert!(figure.contains("class=\"limit\""), "{budget}: limit line");
        assert!(figure.contains("class=\"warn\""), "{budget}: warning line");
        assert!(
            figure.contains("<path class=\"projection\""),
            "{budget}: projection"
        );
    }
    assert!(dom.contains(">limit $5.00</text>"));
    assert!(
        !dom.contains("data-budget=\"memory\"><figcaption>"),
        "memory is a level"
    );

    // Tokens by kind: uncached input is input less cache reads (24 × 1000 + 8 × 1000).
    let kinds = svg_of(&dom, "tokens-by-kind");
    assert!(
        kinds.contains("<title>input · last 24 h: 32000 tokens</title>"),
        "{kinds}"
    );
    assert!(
        kinds.contains("<title>cache_read · last 24 h: 72000 tokens</title>"),
        "{kinds}"
    );

    // The target: CPU in cores (a busy loop uses about one) and memory against its budget.
    let cpu = svg_of(&dom, "cpu-0");
    assert!(cpu.contains("<path class=\"series\" d=\"M"), "{cpu}");
    // A busy loop uses about one core; the minute's figure is over the seconds sampled.
    let busiest = cpu
        .split("cores</title>")
        .filter_map(|s| s.rsplit(": ").next()?.trim().parse::<f64>().ok())
        .fold(0.0, f64::max);
    assert!(busiest > 0.2 && busiest < 1.5, "cores: {busiest}\n{cpu}");
    let memory = svg_of(&dom, "mem-0");
    assert!(memory.contains(">limit 1024.0 MiB</text>"), "{memory}");

    // Screenshots for people (CI keeps target/tmp/status-page); a phone-width one too.
    screenshots(
        browser,
        profile.path(),
        &url,
        &[
            ("figures-desktop", "1280,2600"),
            ("figures-phone", "390,3200"),
        ],
    );
    drop(agent);
}

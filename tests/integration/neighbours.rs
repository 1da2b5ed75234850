//! Hostile neighbours, each attack performed against the real binary and shown refused: a web
//! page in a real browser, a DNS-rebinding Host, planted links for status files, reports and
//! pid files (as another user where it takes one), a fifo as pid file.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::util::{Daemon, Workload, alive, require_tool, scratch_dir, wait_for};

const SETTLE: Duration = Duration::from_secs(20);

fn refused(daemon: &Daemon, reason: &str) -> f64 {
    daemon
        .scrape()
        .samples
        .iter()
        .filter(|s| {
            s.metric == "haios_requests_refused_total" && s.labels.get("reason") == Some(reason)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// An "attacker" site on another loopback port, serving one page.
fn attacker_site(page: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    url
}

fn alert_payload(target: &str) -> String {
    json!({"version": "4", "status": "firing", "receiver": "costmeter", "groupLabels": {},
           "commonLabels": {}, "commonAnnotations": {}, "externalURL": "", "groupKey": "{}",
           "alerts": [{"status": "firing", "labels": {"alertname": "BudgetExceeded",
           "costmeter_action": "soft_kill", "target": target}, "annotations": {},
           "startsAt": "2026-12-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
           "generatorURL": "", "fingerprint": "1"}]})
    .to_string()
}

#[test]
fn a_web_page_in_a_real_browser_can_neither_kill_nor_spend() {
    let Some(browser) = require_tool("chromium", "apt-get install chromium") else {
        return;
    };
    let sleeper = Workload::shell("exec sleep 600");
    let pid = sleeper.pid();
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid = {pid}\nsample_interval = \"50ms\"\n\n[budgets]\nusd = 1.0\n"
    ));
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    let event = json!({"type": "llm_usage", "agent": "coder", "model": "gpt-5",
                       "input_tokens": 1, "output_tokens": 1, "cost_usd": 9999})
    .to_string();
    let base = format!("http://127.0.0.1:{}", daemon.addr.port());
    // Every way a page can send a write without asking: no-cors fetches with a "simple"
    // content type, a text/plain form, and a CORS fetch with JSON (which needs a preflight).
    let page = format!(
        r#"<!doctype html><html><body>
<form id="f" method="POST" action="{base}/v1/alerts" enctype="text/plain" target="sink">
<input name='{{"x":"' value='"}}'></form><iframe name="sink"></iframe>
<script>
const alert = {alert};
const event = {event};
fetch("{base}/v1/alerts", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify(alert)}});
fetch("{base}/v1/events", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: JSON.stringify(event)}});
fetch("{base}/v1/events", {{method: "POST", mode: "no-cors", body: new Blob([JSON.stringify(event)])}});
fetch("{base}/v1/alerts", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: JSON.stringify(alert)}}).catch(() => {{}});
document.getElementById("f").submit();
</script></body></html>"#,
        alert = alert_payload("agent"),
    );
    let site = attacker_site(page);
    let profile = scratch_dir();
    let output = crate::util::headless_chromium(
        browser,
        profile.path(),
        &["--dump-dom".to_string(), site.clone()],
    );
    assert!(output.status.success(), "chromium ran");
    // The browser's requests arrived and were refused as a web page's.
    wait_for("the page's requests to be refused", SETTLE, || {
        (refused(&daemon, "foreign_origin") >= 3.0).then_some(())
    });
    assert!(alive(pid), "the agent was not killed");
    let scrape = daemon.scrape();
    assert!(
        scrape
            .value("haios_usd_spend_total", &[("agent", "coder")])
            .is_none(),
        "nothing was spent"
    );
    assert_eq!(
        scrape.value(
            "haios_budget_state",
            &[("budget", "lifetime-usd"), ("resource", "usd")]
        ),
        Some(0.0)
    );
    assert_eq!(daemon.log_count("soft-kill ordered"), 0);
}

/// Sends one raw HTTP/1.1 request; returns the status line.
fn raw_request(daemon: &Daemon, request: &str) -> String {
    let mut stream = TcpStream::connect(daemon.addr).expect("connect");
    stream.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_dns_rebinding_host_is_refused_and_known_names_pass() {
    let daemon = Daemon::start("allowed_hosts = [\"costmeter\"]\n");
    let body = json!({"type": "llm_usage", "agent": "coder", "model": "gpt-5",
                      "input_tokens": 10, "output_tokens": 1, "cost_usd": 9999})
    .to_string();
    let post = |host: &str| {
        raw_request(
            &daemon,
            &format!(
                "POST /v1/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let port = daemon.addr.port();
    assert!(post(&format!("rebind.attacker.example:{port}")).contains("403"));
    assert!(
        raw_request(
            &daemon,
            &format!("GET / HTTP/1.1\r\nHost: rebind.attacker.example:{port}\r\nConnection: close\r\n\r\n")
        )
        .contains("403"),
        "the page is not readable under a rebinding name either"
    );
    assert!(
        raw_request(
            &daemon,
            "GET /metrics HTTP/1.1\r\nHost: prometheus-sees-me-as-this:9\r\nConnection: close\r\n\r\n"
        )
        .contains("200"),
        "scrapes answer under any name"
    );
    assert_eq!(refused(&daemon, "foreign_host"), 2.0);
    assert!(
        daemon
            .scrape()
            .value("haios_usd_spend_total", &[("agent", "coder")])
            .is_none()
    );
    assert!(post(&format!("costmeter:{port}")).contains("202"));
    assert!(post(&format!("127.0.0.1:{port}")).contains("202"));
}

/// Runs a command as `nobody`. None when this is not root (then the test skips, except in CI).
fn as_nobody(args: &[&str]) -> Option<()> {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("COSTMETER_REQUIRE_TOOLS").is_none(),
            "this test needs root, as CI runs"
        );
        eprintln!("skipped: needs root to act as a second user");
        return None;
    }
    let status = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(args)
        .status()
        .expect("setpriv runs");
    assert!(status.success(), "{args:?} as nobody");
    Some(())
}

/// A folder owned by `nobody`, as an unprivileged agent's working folder is. It lives under the
/// system's temporary folder in a parent anyone may traverse, whatever the permissions of the
/// checkout's own folders (CI clones into a folder of its own).
fn nobody_folder() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::Builder::new()
        .prefix("costmeter-nobody-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temporary folder");
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755))
        .expect("traversable");
    let folder = parent.path().join("agent-owned");
    std::fs::create_dir(&folder).expect("folder");
    std::os::unix::fs::chown(&folder, Some(65534), Some(65534)).expect("chown to nobody");
    (parent, folder)
}

#[test]
fn status_file_and_report_writes_never_follow_a_planted_link() {
    let dir = scratch_dir();
    let victim = dir.path().join("root-only");
    std::fs::write(&victim, "secret").expect("victim");
    let (_parent, folder) = nobody_folder();
    let link = |name: &str| {
        let target = victim.display().to_string();
        let at = folder.join(name).display().to_string();
        as_nobody(&["ln", "-s", &target, &at])
    };
    // The old predictable temp names, and the destinations themselves.
    for name in ["exec_status_run-1.tmp", "exec_status_run-1.txt"] {
        if link(name).is_none() {
            return;
        }
    }
    let daemon = Daemon::start(&format!(
        "[status_file]\npath = \"{}/exec_status_{{g}}.txt\"\n\n[report]\nevery = \"1h\"\ndir = \"{}\"\n",
        folder.display(),
        folder.display()
    ));
    // The report written at start names the week: plant links under its name and restart.
    let report = wait_for("the first report", SETTLE, || {
        std::fs::read_dir(&folder)
            .ok()?
            .filter_map(Result::ok)
            .find_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name.starts_with("cost_report_") && name.ends_with(".md")).then_some(name)
            })
    });
    std::fs::remove_file(folder.join(&report)).expect("remove report");
    link(&report);
    link(&report.replace(".md", ".tmp"));
    let daemon = daemon.restart(libc::SIGTERM);
    daemon.post_events(&json!([
        {"type": "run_start", "run_id": "run-1"},
        {"type": "task_start", "task_id": "t1", "run_id": "run-1", "task_type": "edit"},
        {"type": "task_end", "task_id": "t1", "run_id": "run-1", "task_type": "edit", "result": "success"}
    ]));
    wait_for("both writes to be refused", SETTLE, || {
        (daemon.log_count("symbolic link") >= 2).then_some(())
    });
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "secret");
    assert!(
        std::fs::symlink_metadata(folder.join("exec_status_run-1.txt"))
            .is_ok_and(|m| m.file_type().is_symlink()),
        "the link was left as it was"
    );
}

#[test]
fn a_pid_file_linked_to_root_s_pid_file_is_refused_and_nothing_is_killed() {
    let dir = scratch_dir();
    let root_process = Workload::shell("exec sleep 600");
    let root_pid_file = dir.path().join("root-daemon.pid");
    std::fs::write(&root_pid_file, format!("{}\n", root_process.pid())).expect("pid file");
    let (_parent, folder) = nobody_folder();
    let agent_pid_file = folder.join("agent.pid");
    if as_nobody(&[
        "ln",
        "-s",
        &root_pid_file.display().to_string(),
        &agent_pid_file.display().to_string(),
    ])
    .is_none()
    {
        return;
    }
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid_file = \"{}\"\nsample_interval = \"50ms\"\n",
        agent_pid_file.display()
    ));
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 0.0
    });
    let (status, _) = daemon.post(
        "/v1/alerts",
        "application/json",
        alert_payload("agent").as_bytes(),
    );
    assert_eq!(status, 200);
    wait_for("the refusal to be logged", SETTLE, || {
        (daemon.log_count("symbolic link") >= 1).then_some(())
    });
    wait_for("the alert's kill to be carried out", SETTLE, || {
        (daemon.log_count("soft-kill found no process to stop") >= 1).then_some(())
    });
    assert!(alive(root_process.pid()), "root's process was not killed");
}

#[test]
fn a_fifo_or_a_device_as_pid_file_never_stalls_sampling_or_shutdown() {
    let dir = scratch_dir();
    let fifo = dir.path().join("agent.pid");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    let busy = Workload::shell("exec sleep 600");
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"fifo\"\npid_file = \"{}\"\nsample_interval = \"50ms\"\n\n\
         [[target]]\nname = \"zero\"\npid_file = \"/dev/zero\"\nsample_interval = \"50ms\"\n\n\
         [[target]]\nname = \"real\"\npid = {}\nsample_interval = \"50ms\"\n",
        fifo.display(),
        busy.pid()
    ));
    for target in ["fifo", "zero"] {
        daemon.wait_metric("haios_target_up", &[("target", target)], SETTLE, |v| {
            v == 0.0
        });
    }
    // Sampling goes on: the real target is sampled again and again.
    let first = daemon.wait_metric("haios_target_up", &[("target", "real")], SETTLE, |v| {
        v == 1.0
    });
    assert_eq!(first, 1.0);
    wait_for("both pid files to be refused in the log", SETTLE, || {
        (daemon.log_count("not a regular file") >= 2).then_some(())
    });
    let started = std::time::Instant::now();
    let status = daemon.stop();
    assert!(status.success(), "SIGTERM still ends the daemon: {status}");
    assert!(started.elapsed() < SETTLE);
}

#[test]
fn a_back_dated_ts_is_charged_at_receipt_and_one_older_than_retention_is_refused() {
    // Rolling windows: a calendar day would roll over between the post and the read when the
    // test runs at midnight UTC (it once did, in CI).
    let daemon = Daemon::start(
        "[[budget]]\nname = \"daily\"\nresource = \"usd\"\nlimit = 10.0\nwindow = \"24h\"\n\n\
         [[budget]]\nname = \"hourly\"\nresource = \"usd\"\nlimit = 10.0\nwindow = \"1h\"\non_exceed = \"alert\"\n",
    );
    let twenty_days_ago = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(20 * 24))
        .expect("time");
    let answer = daemon.post_events(&json!({"type": "llm_usage", "event_id": "old-1",
        "ts": twenty_days_ago.to_string(), "agent": "coder", "model": "gpt-5",
        "input_tokens": 1, "output_tokens": 1, "cost_usd": 2000}));
    assert_eq!(answer["accepted"], 1, "{answer}");
    let (_, _, budgets) = daemon.get("/v1/budgets", None);
    let budgets: serde_json::Value = serde_json::from_str(&budgets).expect("JSON");
    for budget in budgets["budgets"].as_array().expect("list") {
        assert_eq!(budget["used"], 2000.0, "{budget}");
        assert_eq!(budget["state"], "exceeded", "{budget}");
    }
    let (status, _, check) = daemon.get("/v1/budgets/check?agent=coder", None);
    assert_ne!(status, 200, "{check}");
    // The same after a restart: the charge is replayed at its receipt time.
    let daemon = daemon.restart(libc::SIGTERM);
    let (_, _, budgets) = daemon.get("/v1/budgets", None);
    assert!(budgets.contains("\"used\":2000.0"), "{budgets}");

    // Older than retention (35 days by default): refused, and refused again when resent.
    for _ in 0..2 {
        let (status, answer) = daemon.post(
            "/v1/events",
            "application/json",
            json!({"type": "llm_usage", "event_id": "ancient", "ts": "1970-01-01T00:00:00Z",
                   "agent": "coder", "model": "gpt-5", "input_tokens": 1, "output_tokens": 1,
                   "cost_usd": 2000})
            .to_string()
            .as_bytes(),
        );
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["rejected"][0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("field 'ts'") && e.contains("retention")),
            "{answer}"
        );
    }
    let (_, _, budgets) = daemon.get("/v1/budgets", None);
    assert!(budgets.contains("\"used\":2000.0"), "{budgets}");
}

#[test]
fn a_flood_of_idle_grpc_connections_under_a_low_fd_limit_stops_nothing() {
    let port = crate::util::free_port();
    let daemon = Daemon::builder()
        .config(&format!(
            "header_timeout = \"1s\"\n\n[otlp]\ngrpc_listen = \"127.0.0.1:{port}\"\n\n\
             [[target]]\nname = \"self\"\nself = true\nsample_interval = \"50ms\"\n"
        ))
        .fd_limit(256)
        .start();
    wait_for("the gRPC receiver", SETTLE, || {
        (daemon.log_count("listening for OTLP/gRPC") > 0).then_some(())
    });
    assert_eq!(
        daemon.log_count("clamped"),
        1,
        "1024 connections do not fit in 256 fds"
    );
    // Twice the fd limit of silent connections: the kernel's backlog holds what the cap
    // does not admit, and the admitted ones are closed after the header deadline.
    let grpc: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    // A full backlog drops SYNs: connect briefly, and count what got through.
    let idle: Vec<TcpStream> = (0..512)
        .filter_map(|_| TcpStream::connect_timeout(&grpc, Duration::from_millis(100)).ok())
        .collect();
    assert!(idle.len() > 128, "{} connections opened", idle.len());
    for _ in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(daemon.get("/healthz", None).0, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "/healthz answered in {:?}",
            started.elapsed()
        );
    }
    // Sampling goes on: the sampler still reads /proc.
    let before = daemon
        .scrape()
        .value("haios_cpu_seconds_total", &[("target", "self")])
        .unwrap_or(0.0);
    daemon.wait_metric(
        "haios_cpu_seconds_total",
        &[("target", "self")],
        SETTLE,
        |v| v > before,
    );
    let mut first = idle.into_iter().next().expect("one");
    first.set_read_timeout(Some(SETTLE)).expect("read timeout");
    let mut buffer = [0u8; 16];
    assert_eq!(
        first.read(&mut buffer).unwrap_or(0),
        0,
        "a silent connection is closed after the header deadline"
    );
}

#[test]
fn a_flood_of_names_keeps_series_page_report_pricing_and_log_bounded() {
    let daemon = Daemon::start("");
    // 200 agents × 100 unpriced models: 20,000 pairs, each label within its own cap.
    for agent in 0..200 {
        let body: String = (0..100)
            .map(|model| {
                format!(
                    "{}\n",
                    json!({"type": "llm_usage", "agent": format!("agent-{agent}"),
                           "model": format!("flood-model-{model}-{}", agent % 10),
                           "input_tokens": 10, "output_tokens": 1})
                )
            })
            .collect();
        let (status, answer) = daemon.post("/v1/events", "application/x-ndjson", body.as_bytes());
        assert_eq!(status, 202, "{answer}");
    }
    let (_, _, exposition) = daemon.get("/metrics", None);
    let token_series = exposition
        .lines()
        .filter(|l| l.starts_with("haios_tokens_total{"))
        .count();
    assert!(
        token_series <= 4 * 5001,
        "{token_series} token series for 20,000 pairs"
    );
    let folded = daemon
        .scrape()
        .value(
            "haios_label_values_overflow_total",
            &[("label", "agent+model")],
        )
        .unwrap_or(0.0);
    assert!(folded >= 15_000.0, "{folded} pairs folded and counted");

    // The page, under load from two clients, stays small while /healthz answers.
    let url = daemon.url("/");
    let pages: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                ureq::get(&url)
                    .call()
                    .ok()
                    .and_then(|mut r| r.body_mut().read_to_string().ok())
                    .unwrap_or_default()
            })
        })
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(daemon.get("/healthz", None).0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    for page in pages {
        let html = page.join().expect("page thread");
        assert!(html.len() < 200_000, "page of {} bytes", html.len());
        assert!(
            html.contains("more lines"),
            "the page says what it left out"
        );
    }
    let (_, _, report) = daemon.get("/v1/report?window=1d", None);
    let report: serde_json::Value = serde_json::from_str(&report).expect("report JSON");
    assert_eq!(report["spend"].as_array().map(Vec::len), Some(200));
    assert_eq!(report["total_tokens"], 220_000, "totals cover every line");
    assert_eq!(report["spend_omitted"]["lines"], 19_800);
    let (_, _, pricing) = daemon.get("/v1/pricing/status", None);
    let pricing: serde_json::Value = serde_json::from_str(&pricing).expect("pricing JSON");
    assert_eq!(
        pricing["unknown_models"].as_array().map(Vec::len),
        Some(100)
    );
    assert!(
        pricing["unknown_models_omitted"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{pricing}"
    );
    assert!(daemon.log_count("no price for this model") <= 100);
}

#[test]
fn smaller_holes_are_closed_each_by_name() {
    let dir = scratch_dir();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-token-0123456789").expect("token");
    let daemon = Daemon::start(&format!("token_file = \"{}\"\n", token_file.display()));
    let token = Some("first-token-0123456789");

    // A key given twice is refused, not "last wins".
    let (status, answer) = daemon.post_with(
        "/v1/events",
        "application/json",
        br#"{"type":"llm_usage","agent":"a","model":"gpt-5","input_tokens":1,"output_tokens":1,"cost_usd":0.01,"cost_usd":9999}"#,
        token,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("field 'cost_usd' appears twice"),
        "{answer}"
    );

    // OTLP: without the token nothing is counted, not even a rejection for the content type.
    let (status, _, _) = daemon.post_raw("/v1/traces", &[("Content-Type", "text/plain")], b"x");
    assert_eq!(status, 401);
    assert!(
        daemon
            .scrape()
            .value("haios_events_total", &[("source", "otlp")])
            .is_none()
    );

    // /v1/alerts obeys server.max_body_bytes.
    let mut stream = TcpStream::connect(daemon.addr).expect("connect");
    let head = format!(
        "POST /v1/alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer first-token-0123456789\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        2 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).expect("headers");
    let _ = stream.write_all(&vec![b' '; 2 * 1024 * 1024]);
    daemon.wait_metric(
        "haios_requests_refused_total",
        &[("route", "alerts"), ("reason", "body_too_large")],
        SETTLE,
        |v| v == 1.0,
    );

    // Control characters an agent reports never reach the report table or a terminal raw.
    let (status, answer) = daemon.post_with(
        "/v1/events",
        "application/json",
        json!([{"type": "run_start", "run_id": "r-esc"},
               {"type": "run_end", "run_id": "r-esc", "result": "failure",
                "error_summary": "\u{1b}[31mred\nsecond line | pipe"}])
        .to_string()
        .as_bytes(),
        token,
    );
    assert_eq!(status, 202, "{answer}");
    let (_, _, markdown) = daemon.get("/v1/report?format=md", None);
    assert!(!markdown.contains('\u{1b}'), "{markdown}");
    assert!(
        markdown.contains("[31mred second line \\| pipe"),
        "{markdown}"
    );
    let runs = Command::new(crate::util::costmeter_bin())
        .args(["runs", "--url", &format!("http://{}", daemon.addr)])
        .output()
        .expect("costmeter runs");
    assert!(
        !runs.stdout.contains(&0x1b),
        "{}",
        String::from_utf8_lossy(&runs.stdout)
    );

    // A token changed on disk and reloaded is not ignored silently.
    std::fs::write(&token_file, "second-token-0123456789").expect("new token");
    let (status, _) = daemon.post_with("/v1/reload", "application/json", b"", token);
    assert_eq!(status, 200);
    wait_for("the token change to be logged", SETTLE, || {
        (daemon.log_count("the bearer token changed") == 1).then_some(())
    });
}

#[test]
fn check_config_refuses_a_missing_token_file() {
    let dir = scratch_dir();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "[server]\ntoken_file = \"/nonexistent/token\"\n").expect("config");
    let out = Command::new(crate::util::costmeter_bin())
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("check-config");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":2:14: server.token_file: cannot read '/nonexistent/token'"),
        "{stderr}"
    );
}

#[test]
fn alert_replays_do_not_queue_kills() {
    let sleeper = Workload::shell("trap '' TERM; while :; do sleep 0.05; done");
    let pid = sleeper.pid();
    let daemon = Daemon::start(&format!(
        "[[target]]\nname = \"agent\"\npid = {pid}\nsample_interval = \"50ms\"\n\n[enforcement]\ngrace = \"2s\"\n"
    ));
    daemon.wait_metric("haios_target_up", &[("target", "agent")], SETTLE, |v| {
        v == 1.0
    });
    for _ in 0..50 {
        let (status, _) = daemon.post(
            "/v1/alerts",
            "application/json",
            alert_payload("agent").as_bytes(),
        );
        assert_eq!(status, 200);
    }
    wait_for("the target to be stopped", SETTLE, || {
        (!alive(pid)).then_some(())
    });
    daemon.wait_metric(
        "haios_soft_kills_total",
        &[("target", "agent"), ("signal", "SIGKILL")],
        SETTLE,
        |v| v >= 1.0,
    );
    assert_eq!(
        daemon.log_count("soft-kill ordered"),
        1,
        "one kill for fifty replays"
    );
    assert!(daemon.log_count("soft-kill already under way") >= 1);
}

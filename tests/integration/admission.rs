//! Admission before the spend, end to end: the official SDKs through the proxy against a hard
//! budget. Concurrent calls never spend past the limit at the provider; refusals are raised at
//! once (no retries) and never reach the provider; a stream is cut at the limit; reservations
//! of calls that die are released.

use std::time::Duration;

use serde_json::Value;

use crate::util::{Daemon, StandIn, run_python, scratch_dir, sdk_python, wait_for};

const SETTLE: Duration = Duration::from_secs(30);

fn config(standin: &StandIn, budget: &str) -> String {
    format!(
        "[proxy]\nenabled = true\n[[proxy.upstream]]\nname = \"anthropic\"\nprovider = \"anthropic\"\nbase_url = \"{}\"\n{budget}",
        standin.url
    )
}

/// USD the stand-in's reported usage costs at the baseline's prices.
/// The most a call of the concurrency scripts may cost: 100 output tokens of claude-sonnet-4-5
/// ($0.0015) and ~50 input tokens at its cache-write price (under $0.0002). Admission holds
/// this much for each until it settles.
pub(crate) const WORST_CALL_USD: f64 = 100.0 * 15e-6 + 50.0 * 3.75e-6;

/// At least as many calls as fit `limit` at their worst case were admitted.
#[track_caller]
pub(crate) fn assert_admitted_what_fits(admitted: usize, limit: f64) {
    let fit = (limit / WORST_CALL_USD).floor();
    assert!(
        admitted as f64 >= fit,
        "{admitted} admitted, at least {fit} fit"
    );
}

pub(crate) fn priced(calls: &[Value]) -> f64 {
    let table = costmeter::pricing::PriceTable::load(None, &Default::default()).expect("prices");
    calls
        .iter()
        .filter(|c| c["usage"].is_object())
        .map(|c| {
            let u = &c["usage"];
            let n = |k: &str| u[k].as_u64().unwrap_or(0);
            let price = table
                .lookup(c["model"].as_str().expect("model"))
                .expect("a priced model");
            (n("input_tokens") as f64 * price.input
                + n("cache_read_input_tokens") as f64 * price.cache_read.expect("cache read")
                + n("cache_creation_input_tokens") as f64 * price.cache_write.expect("cache write")
                + n("output_tokens") as f64 * price.output)
                / 1e6
        })
        .sum()
}

fn calls_counted(daemon: &Daemon, outcome: &str) -> f64 {
    daemon
        .scrape()
        .value(
            "haios_proxy_calls_total",
            &[("upstream", "anthropic"), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
}

const CONCURRENT: &str = r#"
import concurrent.futures, json, sys, time
import anthropic

base = sys.argv[1]
client = anthropic.Anthropic(base_url=base + "/proxy/anthropic", api_key="sk-test",
                             default_headers={"x-standin-events": "400", "x-costmeter-agent": "coder"})

def call(i):
    started = time.monotonic()
    try:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=100,
                               messages=[{"role": "user", "content": "write call %d at length" % i}])
        return {"ok": True}
    except anthropic.APIStatusError as e:
        return {"ok": False, "status": e.status_code, "message": str(e),
                "budget": e.response.headers.get("x-costmeter-budget"), "seconds": time.monotonic() - started}

with concurrent.futures.ThreadPoolExecutor(40) as pool:
    print(json.dumps(list(pool.map(call, range(40)))))
"#;

#[test]
fn forty_concurrent_sdk_calls_never_spend_past_a_hard_budget_and_refusals_are_not_retried() {
    let Some(python) = sdk_python() else { return };
    let dir = scratch_dir();
    let standin = StandIn::start(dir.path(), None);
    let limit = 0.02;
    let daemon = Daemon::builder()
        .config(&config(
            &standin,
            &format!("[[budget]]\nname = \"coder-usd\"\nresource = \"usd\"\nlimit = {limit}\nagent = \"coder\"\non_exceed = \"soft_kill\"\n"),
        ))
        .start();
    let results = run_python(
        &python,
        "the concurrent calls",
        CONCURRENT,
        &[&daemon.url("")],
    );
    let results = results.as_array().expect("a list");
    let admitted = results.iter().filter(|r| r["ok"] == true).count();
    let refused: Vec<&Value> = results.iter().filter(|r| r["ok"] == false).collect();
    let calls = standin.calls();

    // Never past the limit at the provider.
    let spent = priced(&calls);
    eprintln!(
        "40 calls against ${limit}: {admitted} admitted, {} refused, ${spent:.6} billed",
        refused.len()
    );
    assert!(
        spent <= limit,
        "the provider billed ${spent} against a ${limit} budget"
    );
    // At least the calls whose worst case fits were admitted.
    assert_admitted_what_fits(admitted, limit);
    assert!(!refused.is_empty(), "40 calls do not all fit");
    // Refused calls never reached the provider, raised at once with the budget named, and were
    // sent once each: the SDK's default retries did not fire on the refusal's status.
    assert_eq!(calls.len(), admitted);
    for refusal in &refused {
        assert_eq!(refusal["status"], 402, "{refusal}");
        assert_eq!(refusal["budget"], "coder-usd");
        let message = refusal["message"].as_str().unwrap_or("");
        assert!(
            message.contains("budget 'coder-usd' has no room for this call"),
            "{message}"
        );
    }
    wait_for("every call settled", SETTLE, || {
        (calls_counted(&daemon, "ok") == admitted as f64).then_some(())
    });
    assert_eq!(calls_counted(&daemon, "refused"), refused.len() as f64);
    let state = daemon.budget("coder-usd");
    assert_eq!(state["reserved"], 0.0, "{state}");
    let used = state["used"].as_f64().expect("used");
    assert!(
        (used - spent).abs() < 1e-9,
        "costmeter ${used}, provider ${spent}"
    );
}

const STREAM: &str = r#"
import json, sys
import anthropic

base = sys.argv[1]
client = anthropic.Anthropic(base_url=base + "/proxy/anthropic", api_key="sk-test",
                             default_headers={"x-standin-events": "3000", "x-costmeter-agent": "coder"})
with client.messages.stream(model="claude-sonnet-4-5", max_tokens=4000,
                            messages=[{"role": "user", "content": "write at length"}]) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
print(json.dumps({"chars": len(text), "stop_reason": final.stop_reason}))
"#;

#[test]
fn a_stream_that_would_blow_the_budget_is_cut_cleanly_at_the_limit() {
    let Some(python) = sdk_python() else { return };
    let dir = scratch_dir();
    let standin = StandIn::start(dir.path(), None);
    let limit = 400.0;
    let daemon = Daemon::builder()
        .config(&config(
            &standin,
            &format!("[[budget]]\nname = \"coder-tokens\"\nresource = \"tokens\"\nlimit = {limit}\nagent = \"coder\"\non_exceed = \"soft_kill\"\n"),
        ))
        .start();
    let out = run_python(
        &python,
        "the stream (the SDK saw no clean end)",
        STREAM,
        &[&daemon.url("")],
    );
    assert_eq!(out["stop_reason"], "max_tokens");
    let call = wait_for("the stand-in to see the stream closed", SETTLE, || {
        standin.calls().into_iter().find(|c| c["gone"] == true)
    });
    let u = &call["usage"];
    let input = u["input_tokens"].as_u64().expect("input")
        + u["cache_read_input_tokens"].as_u64().expect("read")
        + u["cache_creation_input_tokens"].as_u64().expect("write");
    let generated = call["generated_output"].as_u64().expect("generated");
    eprintln!("stream cut: {input} input + {generated} output tokens generated against {limit}");
    // The provider generated within the limit, and the cut came near it, not long before.
    assert!(
        (input + generated) as f64 <= limit,
        "{input} + {generated} tokens against {limit}"
    );
    assert!(
        generated as f64 >= 0.5 * (limit - input as f64),
        "cut at {generated}"
    );
    wait_for("the cut recorded", SETTLE, || {
        (calls_counted(&daemon, "limited") == 1.0).then_some(())
    });
    let state = daemon.budget("coder-tokens");
    assert_eq!(state["reserved"], 0.0);
    assert!(state["used"].as_f64().expect("used") <= limit, "{state}");
    assert!(
        state["used"].as_f64().expect("used") >= (input + generated) as f64,
        "the estimate recorded is at or above what was generated: {state}"
    );
}

#[test]
fn reservations_are_released_when_a_client_leaves_an_upstream_fails_or_costmeter_restarts() {
    let dir = scratch_dir();
    let standin = StandIn::start(dir.path(), None);
    let daemon = Daemon::builder()
        .config(&config(
            &standin,
            "[[budget]]\nname = \"coder-tokens\"\nresource = \"tokens\"\nlimit = 100000\nagent = \"coder\"\non_exceed = \"soft_kill\"\n",
        ))
        .start();
    let slow_stream = |daemon: &Daemon| {
        crate::util::open_stream(
            daemon.addr,
            &[
                ("x-api-key", "k"),
                ("x-costmeter-agent", "coder"),
                ("x-standin-delay-ms", "200"),
                ("x-standin-events", "100"),
            ],
            r#"{"model":"claude-sonnet-4-5","max_tokens":1000,"stream":true,"messages":[]}"#,
            "message_start",
        )
    };
    let reserved = |daemon: &Daemon| {
        daemon.budget("coder-tokens")["reserved"]
            .as_f64()
            .expect("reserved")
    };

    // In flight, the call holds its worst case; gone, it holds nothing.
    let stream = slow_stream(&daemon);
    assert!(reserved(&daemon) >= 1000.0, "{}", reserved(&daemon));
    drop(stream);
    wait_for("the reservation released", SETTLE, || {
        (reserved(&daemon) == 0.0).then_some(())
    });

    // A caller that leaves before the provider's headers came releases it too.
    {
        use std::io::Write;
        let mut early = std::net::TcpStream::connect(daemon.addr).expect("connect");
        let body = r#"{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[]}"#;
        write!(
            early,
            "POST /proxy/anthropic/v1/messages HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nx-costmeter-agent: coder\r\nx-standin-stall-ms: 60000\r\n\r\n{body}",
            daemon.addr,
            body.len()
        )
        .expect("write");
        wait_for("the stalled call to hold its reservation", SETTLE, || {
            (reserved(&daemon) > 0.0).then_some(())
        });
    }
    // Long before the provider would answer.
    wait_for(
        "the departed caller's reservation released",
        Duration::from_secs(10),
        || (reserved(&daemon) == 0.0).then_some(()),
    );

    // An upstream error releases it too.
    let (status, _, _) = daemon.post_raw(
        "/proxy/anthropic/v1/messages",
        &[
            ("Content-Type", "application/json"),
            ("x-costmeter-agent", "coder"),
            ("x-standin-status", "500"),
        ],
        br#"{"model":"claude-sonnet-4-5","max_tokens":1000,"messages":[]}"#,
    );
    assert_eq!(status, 500);
    wait_for("the failed call's reservation released", SETTLE, || {
        (reserved(&daemon) == 0.0 && calls_counted(&daemon, "error") == 1.0).then_some(())
    });

    // A restart mid-call leaves nothing held: reservations live only as long as their calls.
    let _stream = slow_stream(&daemon);
    assert!(reserved(&daemon) > 0.0);
    let daemon = daemon.restart(15);
    assert_eq!(reserved(&daemon), 0.0);
    let (status, _, _) = daemon.post_raw(
        "/proxy/anthropic/v1/messages",
        &[
            ("Content-Type", "application/json"),
            ("x-costmeter-agent", "coder"),
        ],
        br#"{"model":"claude-sonnet-4-5","max_tokens":90000,"messages":[]}"#,
    );
    assert_eq!(
        status, 200,
        "a call needing nearly the whole budget is admitted"
    );
}

#[test]
fn every_proxied_answer_says_what_is_left_and_warns_past_warn_at() {
    let dir = scratch_dir();
    let standin = StandIn::start(dir.path(), None);
    let daemon = Daemon::builder()
        .config(&config(
            &standin,
            "[[budget]]\nname = \"coder-tokens\"\nresource = \"tokens\"\nlimit = 100000\nagent = \"coder\"\non_exceed = \"soft_kill\"\n\
             [[budget]]\nname = \"coder-usd\"\nresource = \"usd\"\nlimit = 1.0\nagent = \"coder\"\non_exceed = \"alert\"\n",
        ))
        .start();
    daemon.post_events(&serde_json::json!({"type": "llm_usage", "agent": "coder",
        "model": "claude-sonnet-4-5", "input_tokens": 10, "output_tokens": 0, "cost_usd": 0.95}));
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = http
        .post(&daemon.url("/proxy/anthropic/v1/messages"))
        .header("content-type", "application/json")
        .header("x-costmeter-agent", "coder")
        .send(r#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#)
        .expect("the proxy answers");
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        header("x-costmeter-budget-remaining"),
        "coder-tokens=99990 tokens, coder-usd=0.05 usd"
    );
    assert_eq!(header("x-costmeter-budget-warning"), "coder-usd:95%");
    // A soft budget past its limit warns and never refuses.
    daemon.post_events(&serde_json::json!({"type": "llm_usage", "agent": "coder",
        "model": "claude-sonnet-4-5", "input_tokens": 10, "output_tokens": 0, "cost_usd": 0.5}));
    let (status, _, _) = daemon.post_raw(
        "/proxy/anthropic/v1/messages",
        &[
            ("Content-Type", "application/json"),
            ("x-costmeter-agent", "coder"),
        ],
        br#"{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}"#,
    );
    assert_eq!(status, 200);
}

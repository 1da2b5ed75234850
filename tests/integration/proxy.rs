//! The LLM API proxy end to end: the official `anthropic`, `openai` and `google-genai` Python
//! SDKs pointed at costmeter, costmeter forwarding over TLS (a private CA made at test time) to
//! a stand-in that speaks each provider's documented wire format, whole and streamed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Daemon, StandIn, TestCa, sdk_python, test_ca, wait_for};

const SETTLE: Duration = Duration::from_secs(20);
const SECRET: &str = "sk-test-SECRET-7c1f9e";
const PROMPT: &str = "PROMPT-MARKER-4b2d: say hello";

fn proxy_config(standin: &StandIn, ca: Option<&TestCa>) -> String {
    let mut config = String::new();
    if let Some(ca) = ca {
        config.push_str(&format!("[tls]\nca_file = \"{}\"\n", ca.ca.display()));
    }
    config.push_str("[proxy]\nenabled = true\n");
    for (name, provider) in [
        ("anthropic", "anthropic"),
        ("openai", "openai"),
        ("gemini", "gemini"),
    ] {
        config.push_str(&format!(
            "[[proxy.upstream]]\nname = \"{name}\"\nprovider = \"{provider}\"\nbase_url = \"{}\"\n",
            standin.url
        ));
    }
    config
}

/// Tokens by (model, kind) under the token rule, from what the stand-in reported.
fn expected_tokens(calls: &[Value]) -> BTreeMap<(String, &'static str), u64> {
    let mut expected = BTreeMap::new();
    let n = |usage: &Value, key: &str| usage[key].as_u64().unwrap_or(0);
    for call in calls {
        let usage = &call["usage"];
        if usage.is_null() {
            continue;
        }
        let model = call["model"].as_str().expect("model").to_string();
        let (uncached, cache_read, cache_write, output) = match call["provider"].as_str() {
            // Anthropic's input_tokens exclude both cache counts.
            Some("anthropic") => (
                n(usage, "input_tokens"),
                n(usage, "cache_read_input_tokens"),
                n(usage, "cache_creation_input_tokens"),
                n(usage, "output_tokens"),
            ),
            Some("openai") => {
                let input = n(usage, "prompt_tokens") + n(usage, "input_tokens");
                let cached = usage["prompt_tokens_details"]["cached_tokens"]
                    .as_u64()
                    .or(usage["input_tokens_details"]["cached_tokens"].as_u64())
                    .unwrap_or(0);
                (
                    input - cached,
                    cached,
                    0,
                    n(usage, "completion_tokens") + n(usage, "output_tokens"),
                )
            }
            // Gemini: thoughts are output, billed beside the candidates.
            _ => {
                let cached = n(usage, "cachedContentTokenCount");
                (
                    n(usage, "promptTokenCount") - cached,
                    cached,
                    0,
                    n(usage, "candidatesTokenCount") + n(usage, "thoughtsTokenCount"),
                )
            }
        };
        for (kind, value) in [
            ("input", uncached),
            ("cache_read", cache_read),
            ("cache_write", cache_write),
            ("output", output),
        ] {
            *expected.entry((model.clone(), kind)).or_insert(0) += value;
        }
    }
    expected
}

fn proxy_events(daemon: &Daemon, result: &str) -> f64 {
    daemon
        .scrape()
        .value(
            "haios_events_total",
            &[
                ("source", "proxy"),
                ("type", "llm_usage"),
                ("result", result),
            ],
        )
        .unwrap_or(0.0)
}

fn calls_counted(daemon: &Daemon, upstream: &str, outcome: &str) -> f64 {
    daemon
        .scrape()
        .value(
            "haios_proxy_calls_total",
            &[("upstream", upstream), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
}

const SDK_SCRIPT: &str = r#"
import json, sys
import anthropic, openai
from google import genai
from google.genai import types

base, key, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
out = {"texts": []}
texts = out["texts"]

a = anthropic.Anthropic(base_url=base + "/proxy/anthropic", api_key=key)
message = a.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                            messages=[{"role": "user", "content": prompt}])
texts.append(message.content[0].text)
with a.messages.stream(model="claude-opus-4-5", max_tokens=64,
                       messages=[{"role": "user", "content": prompt + " twice"}]) as stream:
    texts.append("".join(stream.text_stream))

o = openai.OpenAI(base_url=base + "/proxy/openai/v1", api_key=key)
chat = o.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": prompt}])
texts.append(chat.choices[0].message.content)
chunks = list(o.chat.completions.create(model="gpt-4o-mini", stream=True,
                                        messages=[{"role": "user", "content": prompt}]))
texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
out["chat_stream_chunks_with_usage"] = sum(1 for c in chunks if c.usage is not None)
out["chat_stream_chunks_without_choices"] = sum(1 for c in chunks if not c.choices)
response = o.responses.create(model="gpt-4.1", input=prompt)
texts.append(response.output_text)
text = ""
for event in o.responses.create(model="gpt-4.1-mini", input=prompt, stream=True):
    if event.type == "response.output_text.delta":
        text += event.delta
texts.append(text)

g = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base + "/proxy/gemini"))
reply = g.models.generate_content(model="gemini-2.5-flash", contents=prompt)
texts.append(reply.text)
texts.append("".join(c.text or "" for c in g.models.generate_content_stream(model="gemini-2.5-pro", contents=prompt)))
print(json.dumps(out))
"#;

#[test]
fn the_official_sdks_through_the_proxy_over_tls_are_metered_exactly() {
    let Some(python) = sdk_python() else { return };
    let ca = test_ca();
    let standin = StandIn::start(ca.dir.path(), Some(&ca));
    let daemon = Daemon::builder()
        .config(&proxy_config(&standin, Some(&ca)))
        .start();
    let out = crate::util::run_python(
        &python,
        "the SDK script",
        SDK_SCRIPT,
        &[&daemon.url(""), SECRET, PROMPT],
    );
    let calls = standin.calls();
    assert_eq!(calls.len(), 8, "every call reached the stand-in: {calls:?}");

    // Answers arrive unchanged; the credentials reach the provider unchanged.
    let sent: Vec<&str> = calls
        .iter()
        .map(|c| c["text"].as_str().unwrap_or(""))
        .collect();
    let received: Vec<&str> = out["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|t| t.as_str().unwrap_or(""))
        .collect();
    assert_eq!(received, sent);
    for call in &calls {
        let credentials = call["credentials"].as_str().unwrap_or("");
        assert!(
            credentials == SECRET || credentials == format!("Bearer {SECRET}"),
            "{call}"
        );
    }
    assert!(
        calls
            .iter()
            .filter(|c| c["provider"] == "anthropic")
            .all(|c| c["anthropic_version"].is_string())
    );

    // The chat stream did not ask for usage: the proxy asked, read it, and kept it from the
    // client.
    let chat_stream = calls
        .iter()
        .find(|c| c["path"] == "/v1/chat/completions" && c["stream"] == true)
        .expect("the chat stream");
    assert_eq!(chat_stream["include_usage"], true);
    assert_eq!(out["chat_stream_chunks_with_usage"], 0);
    assert_eq!(out["chat_stream_chunks_without_choices"], 0);

    // Tokens by kind equal what the provider reported, exactly, once each.
    wait_for("every call recorded", SETTLE, || {
        (proxy_events(&daemon, "accepted") == 8.0).then_some(())
    });
    let scrape = daemon.scrape();
    for ((model, kind), value) in expected_tokens(&calls) {
        assert_eq!(
            scrape.value(
                "haios_tokens_total",
                &[("agent", "proxy"), ("model", &model), ("kind", kind)]
            ),
            Some(value as f64),
            "{model} {kind}"
        );
    }
    for upstream in ["anthropic", "openai", "gemini"] {
        assert!(calls_counted(&daemon, upstream, "ok") >= 2.0, "{upstream}");
    }
    // Priced from the table: a known model's spend is above zero.
    assert!(
        scrape
            .value(
                "haios_usd_spend_total",
                &[("agent", "proxy"), ("model", "gpt-4o")]
            )
            .is_some_and(|usd| usd > 0.0)
    );

    // No key and no prompt text in the store or the log.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(daemon.dir.path()).expect("dir").flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("costmeter.db")
        {
            stored.extend(std::fs::read(entry.path()).expect("store file"));
        }
    }
    let logs = daemon.logs().join("\n");
    for secret in [SECRET, "PROMPT-MARKER-4b2d"] {
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is in the store"
        );
        assert!(!logs.contains(secret), "{secret} is in the log");
    }
}

/// POSTs to the proxy with raw HTTP/1.1 and reads the answer as it arrives: each line with the
/// time it came.
fn stream_lines(
    daemon: &Daemon,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Vec<(Duration, String)> {
    let mut stream = std::net::TcpStream::connect(daemon.addr).expect("connect");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        daemon.addr,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let started = Instant::now();
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write");
    BufReader::new(stream)
        .lines()
        .map_while(Result::ok)
        .map(|line| (started.elapsed(), line))
        .collect()
}

#[test]
fn streams_arrive_event_by_event_and_a_departed_client_closes_the_upstream_call() {
    let dir = crate::util::scratch_dir();
    let standin = StandIn::start(dir.path(), None);
    let daemon = Daemon::builder()
        .config(&proxy_config(&standin, None))
        .start();
    let lines = stream_lines(
        &daemon,
        "/proxy/anthropic/v1/messages",
        &[
            ("x-api-key", SECRET),
            ("x-standin-delay-ms", "250"),
            ("x-standin-events", "6"),
            ("x-costmeter-agent", "streamer"),
        ],
        r#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[]}"#,
    );
    let at = |needle: &str| {
        lines
            .iter()
            .find(|(_, line)| line.contains(needle))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("no '{needle}' in {lines:?}"))
    };
    let first = at("event: message_start");
    let last = at("event: message_stop");
    // Six deltas 250 ms apart: the first event came as it was sent, not with the last.
    assert!(
        last >= first + Duration::from_millis(1200),
        "first event at {first:?}, last at {last:?}: the stream was buffered"
    );
    wait_for("the stream recorded", SETTLE, || {
        (proxy_events(&daemon, "accepted") == 1.0).then_some(())
    });
    // The stand-in logs its answer after the last byte is sent; the proxy may count first.
    let sent = wait_for("the stand-in to log its answer", SETTLE, || {
        standin.calls().into_iter().next()
    });
    assert_eq!(
        daemon.scrape().value(
            "haios_tokens_total",
            &[
                ("agent", "streamer"),
                ("model", "claude-sonnet-4-5"),
                ("kind", "output")
            ]
        ),
        sent["usage"]["output_tokens"].as_f64()
    );

    // A client that reads the first event and goes away: the upstream call is closed, and what
    // the provider reported so far (message_start's input) is recorded.
    let stream = crate::util::open_stream(
        daemon.addr,
        &[
            ("x-api-key", "k"),
            ("x-standin-delay-ms", "200"),
            ("x-standin-events", "40"),
            ("x-costmeter-agent", "leaver"),
        ],
        r#"{"model":"claude-haiku-4-5","max_tokens":64,"stream":true,"messages":[]}"#,
        "message_start",
    );
    drop(stream);
    let gone = wait_for("the stand-in to see the call closed", SETTLE, || {
        standin
            .calls()
            .into_iter()
            .find(|c| c["model"] == "claude-haiku-4-5")
            .filter(|c| c["gone"] == true)
    });
    assert_eq!(calls_counted(&daemon, "anthropic", "cut"), 1.0);
    let usage = &gone["usage"];
    let input = usage["input_tokens"].as_u64().expect("input")
        + usage["cache_read_input_tokens"].as_u64().expect("read")
        + usage["cache_creation_input_tokens"]
            .as_u64()
            .expect("write");
    let cached = usage["cache_read_input_tokens"].as_u64().expect("read")
        + usage["cache_creation_input_tokens"]
            .as_u64()
            .expect("write");
    daemon.wait_metric(
        "haios_tokens_total",
        &[
            ("agent", "leaver"),
            ("model", "claude-haiku-4-5"),
            ("kind", "input"),
        ],
        SETTLE,
        |v| v == (input - cached) as f64,
    );
}

#[test]
fn errors_pass_unchanged_and_an_unreachable_upstream_is_named_in_the_provider_s_shape() {
    let dir = crate::util::scratch_dir();
    let standin = StandIn::start(dir.path(), None);
    let ca = test_ca();
    let tls_standin = StandIn::start(dir.path(), Some(&ca));
    let closed = crate::util::free_port();
    let config = format!(
        "{}[[proxy.upstream]]\nname = \"nowhere\"\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:{closed}\"\n\
         [[proxy.upstream]]\nname = \"untrusted\"\nprovider = \"gemini\"\nbase_url = \"{}\"\n",
        proxy_config(&standin, None),
        tls_standin.url
    );
    let daemon = Daemon::builder().config(&config).start();
    let (status, _, body) = daemon.post_raw(
        "/proxy/anthropic/v1/messages",
        &[
            ("Content-Type", "application/json"),
            ("x-standin-status", "529"),
        ],
        br#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#,
    );
    assert_eq!(status, 529);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    wait_for("the error counted", SETTLE, || {
        (calls_counted(&daemon, "anthropic", "error") == 1.0).then_some(())
    });
    assert_eq!(
        proxy_events(&daemon, "accepted"),
        0.0,
        "no tokens billed, none recorded"
    );

    let (status, _, body) = daemon.post_raw(
        "/proxy/nowhere/v1/chat/completions",
        &[("Content-Type", "application/json")],
        br#"{"model":"gpt-4o","messages":[]}"#,
    );
    assert_eq!(status, 502);
    let body: Value = serde_json::from_slice(&body).expect("json");
    let message = body["error"]["message"]
        .as_str()
        .expect("OpenAI's error shape");
    assert!(
        message.contains("'nowhere'") && message.contains(&format!("127.0.0.1:{closed}")),
        "{message}"
    );
    assert_eq!(calls_counted(&daemon, "nowhere", "unreachable"), 1.0);

    // An https upstream whose CA is not trusted: the TLS error is named.
    let (status, _, body) = daemon.post_raw(
        "/proxy/untrusted/v1beta/models/gemini-2.5-flash:generateContent",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(status, 502);
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        body["error"]["status"], "UNAVAILABLE",
        "Gemini's error shape"
    );
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("certificate"), "{message}");
    assert!(tls_standin.calls().is_empty());

    // An unknown name is no open proxy.
    let (status, _, body) = daemon.post_raw(
        "/proxy/evil.example.com/v1/chat/completions",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("no upstream named"));
    // A web page cannot spend through it.
    let (status, _, _) = daemon.post_raw(
        "/proxy/anthropic/v1/messages",
        &[
            ("Content-Type", "application/json"),
            ("Origin", "https://evil.example.com"),
        ],
        b"{}",
    );
    assert_eq!(status, 403);
}

#[test]
fn a_call_seen_again_through_otlp_counts_once() {
    let dir = crate::util::scratch_dir();
    let standin = StandIn::start(dir.path(), None);
    let daemon = Daemon::builder()
        .config(&proxy_config(&standin, None))
        .start();
    let (status, _, _) = daemon.post_raw(
        "/proxy/anthropic/v1/messages",
        &[
            ("Content-Type", "application/json"),
            ("x-costmeter-agent", "claude-code"),
        ],
        br#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#,
    );
    assert_eq!(status, 200);
    wait_for("the call recorded", SETTLE, || {
        (proxy_events(&daemon, "accepted") == 1.0).then_some(())
    });
    let call = standin.calls().remove(0);
    let tokens = |daemon: &Daemon| {
        daemon
            .scrape()
            .value(
                "haios_tokens_total",
                &[
                    ("agent", "claude-code"),
                    ("model", "claude-sonnet-4-5"),
                    ("kind", "output"),
                ],
            )
            .unwrap_or(0.0)
    };
    let before = tokens(&daemon);
    assert_eq!(
        before,
        call["usage"]["output_tokens"].as_u64().expect("output") as f64
    );

    // Claude Code's api_request log of the same call carries Anthropic's request id.
    let attribute = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
        .to_string();
    let log = json!({"resourceLogs": [{
    "resource": {"attributes": [attribute("service.name", "claude-code")]},
    "scopeLogs": [{"scope": {"name": "com.anthropic.claude_code.events"}, "logRecords": [{
        "timeUnixNano": now,
        "body": {"stringValue": "claude_code.api_request"},
        "attributes": [
            attribute("event.name", "api_request"),
            attribute("session.id", "s-1"),
            attribute("model", "claude-sonnet-4-5"),
            attribute("request_id", call["request_id"].as_str().expect("request id")),
            attribute("input_tokens", "40"),
            attribute("output_tokens", "9"),
            attribute("cache_read_tokens", "0"),
            attribute("cache_creation_tokens", "0"),
        ]}]}]}]});
    // A GenAI span of the same response carries the message id.
    let span = json!({"resourceSpans": [{
    "resource": {"attributes": [attribute("service.name", "claude-code")]},
    "scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": "chat claude-sonnet-4-5", "kind": 3,
        "startTimeUnixNano": now, "endTimeUnixNano": now,
        "attributes": [
            attribute("gen_ai.request.model", "claude-sonnet-4-5"),
            attribute("gen_ai.response.id", call["response_id"].as_str().expect("message id")),
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "40"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "9"}},
        ]}]}]}]});
    for (path, body) in [("/v1/logs", log), ("/v1/traces", span)] {
        let (status, _, _) = daemon.post_raw(
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        );
        assert_eq!(status, 200, "{path}");
    }
    daemon.wait_metric(
        "haios_events_total",
        &[
            ("source", "otlp"),
            ("type", "llm_usage"),
            ("result", "duplicate"),
        ],
        SETTLE,
        |v| v == 2.0,
    );
    assert_eq!(tokens(&daemon), before, "the proxy's count stands alone");
}

#[test]
fn exec_points_the_agents_at_the_proxy_unless_told_otherwise() {
    let mut daemon = Daemon::builder()
        .config("[proxy]\nenabled = true\n")
        .env("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:1/mine")
        .exec(&["sh", "-c", "env > agent-env.txt"])
        .start();
    let status = daemon.wait_exit(SETTLE);
    assert!(status.success(), "{status}");
    let env = std::fs::read_to_string(daemon.dir.path().join("agent-env.txt")).expect("env file");
    let base = format!("http://127.0.0.1:{}/proxy", daemon.addr.port());
    assert!(
        env.contains(&format!("ANTHROPIC_BASE_URL={base}/anthropic\n")),
        "{env}"
    );
    assert!(
        env.contains(&format!("OPENAI_BASE_URL={base}/openai/v1\n")),
        "{env}"
    );
    assert!(
        env.contains("GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:1/mine\n"),
        "{env}"
    );

    // With the proxy off, nothing is set.
    let mut off = Daemon::builder()
        .exec(&["sh", "-c", "env > agent-env.txt"])
        .start();
    assert!(off.wait_exit(SETTLE).success());
    let env = std::fs::read_to_string(off.dir.path().join("agent-env.txt")).expect("env file");
    assert!(!env.contains("ANTHROPIC_BASE_URL"), "{env}");
}

//! TLS with a private CA made at test time: the daemon's port over https (curl as the client),
//! a budget warning at an https webhook and spans at https OTLP/HTTP and OTLP/gRPC collectors
//! (Python's ssl and tonic's server TLS as the peers), and a wrong CA named in the log,
//! `/v1/status` and `doctor`.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::{Daemon, HttpsReceiver, costmeter_bin, test_ca, wait_for};

const SETTLE: Duration = Duration::from_secs(30);

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl")
}

#[test]
fn the_daemon_port_speaks_https_with_its_certificate() {
    let ca = test_ca();
    let daemon = Daemon::start(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        ca.cert.display(),
        ca.key.display()
    ));
    let url = format!("https://localhost:{}/healthz", daemon.addr.port());
    let trusted = curl(&["--cacert", &ca.ca.display().to_string(), &url]);
    assert!(trusted.status.success(), "{trusted:?}");
    assert_eq!(String::from_utf8_lossy(&trusted.stdout), "ok\n");
    // Without the CA, curl (the system's roots) refuses the certificate.
    let untrusted = curl(&[&url]);
    assert!(!untrusted.status.success());
    // Plain HTTP on the https port gets no answer.
    let plain = curl(&[&format!("http://127.0.0.1:{}/healthz", daemon.addr.port())]);
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("ok"));
    // Events go in over https too.
    let posted = curl(&[
        "--cacert",
        &ca.ca.display().to_string(),
        "-H",
        "Content-Type: application/json",
        "--data",
        r#"{"type":"llm_usage","agent":"a","model":"gpt-5","input_tokens":5,"output_tokens":1}"#,
        &format!("https://localhost:{}/v1/events", daemon.addr.port()),
    ]);
    let answer: Value = serde_json::from_slice(&posted.stdout).expect("JSON");
    assert_eq!(answer["accepted"], 1, "{answer}");
}

#[test]
fn a_budget_warning_reaches_an_https_webhook_and_a_wrong_ca_is_named() {
    let ca = test_ca();
    let receiver = HttpsReceiver::start(&ca);
    let config = |ca_file: &std::path::Path| {
        format!(
            "\n[tls]\nca_file = \"{}\"\n\n[enforcement]\nwebhook = \"{}/hook\"\n\n\
             [[budget]]\nname = \"tokens\"\nresource = \"tokens\"\nlimit = 100\non_exceed = \"alert\"\n",
            ca_file.display(),
            receiver.url
        )
    };
    let daemon = Daemon::start(&config(&ca.ca));
    daemon.post_events(&json!({"type": "llm_usage", "agent": "a", "model": "gpt-5",
                               "input_tokens": 95, "output_tokens": 0}));
    let notice = wait_for("the warning at the https webhook", SETTLE, || {
        receiver
            .received()
            .into_iter()
            .find(|r| r["path"] == "/hook")
    });
    let body: Value = serde_json::from_str(notice["body"].as_str().expect("text")).expect("JSON");
    assert_eq!(body["event"], "budget_warning", "{body}");
    assert_eq!(body["budget"], "tokens");
    drop(daemon);

    // Trusting another CA: the delivery fails, and the log, /v1/status and doctor say where
    // and why.
    let other = test_ca();
    let daemon = Daemon::start(&config(&other.ca));
    daemon.post_events(&json!({"type": "llm_usage", "agent": "a", "model": "gpt-5",
                               "input_tokens": 95, "output_tokens": 0}));
    let line = wait_for("the failed delivery in the log", SETTLE, || {
        daemon
            .logs()
            .into_iter()
            .find(|l| l.contains("webhook not delivered"))
    });
    assert!(line.contains(&receiver.url), "{line}");
    assert!(
        line.to_lowercase().contains("certificate") || line.contains("UnknownIssuer"),
        "{line}"
    );
    let (_, _, status) = daemon.get("/v1/status", None);
    let status: Value = serde_json::from_str(&status).expect("JSON");
    let problem = status["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .find(|p| p["name"] == "webhook delivery")
        .cloned()
        .unwrap_or_else(|| panic!("a webhook problem: {status}"));
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&receiver.url)),
        "{problem}"
    );
    let doctor = Command::new(costmeter_bin())
        .args([
            "doctor",
            "--format",
            "json",
            "--url",
            &format!("http://{}", daemon.addr),
        ])
        .output()
        .expect("doctor");
    assert_eq!(doctor.status.code(), Some(3), "red");
    let findings: Value = serde_json::from_slice(&doctor.stdout).expect("JSON");
    assert!(
        findings["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["name"] == "webhook delivery" && f["status"] == "red"),
        "{findings}"
    );
}

#[test]
fn spans_reach_https_otlp_http_and_grpc_collectors() {
    let ca = test_ca();
    // OTLP/HTTP: Python's ssl server takes the protobuf exports.
    let receiver = HttpsReceiver::start(&ca);
    let daemon = Daemon::start(&format!(
        "\n[tls]\nca_file = \"{}\"\n\n[telemetry]\notlp_endpoint = \"{}\"\nprotocol = \"http/protobuf\"\n",
        ca.ca.display(),
        receiver.url
    ));
    crate::spans::drive_a_run(&daemon);
    let export = wait_for("an export at the https collector", SETTLE, || {
        receiver
            .received()
            .into_iter()
            .find(|r| r["path"] == "/v1/traces")
    });
    assert_eq!(export["content_type"], "application/x-protobuf");
    assert!(
        export["bytes"].as_u64().is_some_and(|n| n > 100),
        "{export}"
    );
    drop(daemon);

    // OTLP/gRPC: tonic's server TLS; the spans are decoded and checked whole.
    let (url, received) = crate::spans::start_grpc_tls_receiver(&ca);
    let daemon = Daemon::start(&format!(
        "\n[tls]\nca_file = \"{}\"\n\n[telemetry]\notlp_endpoint = \"{url}\"\nprotocol = \"grpc\"\n",
        ca.ca.display()
    ));
    crate::spans::drive_a_run(&daemon);
    crate::spans::assert_spans_of_the_run(&received);
}

/// `check-config` on a file it must refuse (exit 2); what it printed.
fn refused_config(config: &std::path::Path) -> String {
    let output = Command::new(costmeter_bin())
        .args(["check-config"])
        .arg(config)
        .output()
        .expect("check-config");
    assert_eq!(output.status.code(), Some(2));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_certificate_files_are_config_errors_naming_the_file() {
    let ca = test_ca();
    let other = test_ca();
    let dir = crate::util::scratch_dir();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n[tls]\nca_file = \"{}\"\n",
            ca.cert.display(),
            other.key.display(),
            dir.path().join("nothing.pem").display()
        ),
    )
    .expect("config");
    let text = refused_config(&config);
    assert!(
        text.contains("server.tls_cert") && text.contains("does not belong to the certificate"),
        "{text}"
    );
    assert!(
        text.contains("tls.ca_file") && text.contains("cannot read"),
        "{text}"
    );
    assert!(text.contains("c.toml:2:"), "located: {text}");

    // An expired certificate (its key matches) is refused with its date.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let expired = params.self_signed(&key).expect("self-signed");
    let (cert, key_file) = (dir.path().join("old.pem"), dir.path().join("old.key"));
    std::fs::write(&cert, expired.pem()).expect("cert");
    std::fs::write(&key_file, key.serialize_pem()).expect("key");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key_file.display()
        ),
    )
    .expect("config");
    let text = refused_config(&config);
    assert!(
        text.contains("server.tls_cert")
            && text.contains("old.pem")
            && text.contains("expired on 2021-01-01T00:00:00Z"),
        "{text}"
    );
}

#[test]
fn the_otlp_grpc_receiver_speaks_tls_to_a_tonic_exporter() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    let ca = test_ca();
    let port = crate::util::free_port();
    let daemon = Daemon::start(&format!(
        "\n[otlp]\ngrpc_listen = \"127.0.0.1:{port}\"\ngrpc_tls_cert = \"{}\"\ngrpc_tls_key = \"{}\"\n",
        ca.cert.display(),
        ca.key.display()
    ));
    wait_for("the gRPC receiver", SETTLE, || {
        (daemon.log_count("listening for OTLP/gRPC") > 0).then_some(())
    });
    let attribute = |key: &str, value: any_value::Value| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![9; 16],
                    span_id: vec![3; 8],
                    name: "chat".into(),
                    attributes: vec![
                        attribute(
                            "gen_ai.request.model",
                            any_value::Value::StringValue("gpt-4o-mini".into()),
                        ),
                        attribute("gen_ai.usage.input_tokens", any_value::Value::IntValue(700)),
                        attribute("gen_ai.usage.output_tokens", any_value::Value::IntValue(70)),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let pem = std::fs::read(&ca.ca).expect("CA");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        // Plain text to a TLS port fails; TLS with the CA goes through.
        let plain = TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await;
        if let Ok(mut plain) = plain {
            assert!(plain.export(request.clone()).await.is_err());
        }
        let channel = tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
            .expect("uri")
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                    .domain_name("localhost"),
            )
            .expect("TLS")
            .connect()
            .await
            .expect("connects over TLS");
        let answer = TraceServiceClient::new(channel)
            .export(request)
            .await
            .expect("exported")
            .into_inner();
        assert_eq!(answer.partial_success, None);
    });
    let tokens = daemon.wait_metric(
        "haios_tokens_total",
        &[("model", "gpt-4o-mini"), ("kind", "input")],
        SETTLE,
        |v| v >= 700.0,
    );
    assert_eq!(tokens, 700.0);
}

#[test]
fn a_renewed_certificate_is_served_after_a_reload_and_a_bad_one_keeps_the_running_one() {
    let first = test_ca();
    let dir = crate::util::scratch_dir();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&first.cert, &cert).expect("cert");
    std::fs::copy(&first.key, &key).expect("key");
    let daemon = Daemon::start(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    let healthz = |ca: &std::path::Path| {
        curl(&[
            "--cacert",
            &ca.display().to_string(),
            &format!("https://localhost:{}/healthz", daemon.addr.port()),
        ])
        .status
        .success()
    };
    let reload = |ca: &std::path::Path| {
        let output = curl(&[
            "--cacert",
            &ca.display().to_string(),
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            &format!("https://localhost:{}/v1/reload", daemon.addr.port()),
        ]);
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    assert!(healthz(&first.ca));
    // A half-written renewal (the new key, the old certificate) is refused whole.
    let second = test_ca();
    std::fs::copy(&second.key, &key).expect("new key");
    let answer = reload(&first.ca);
    assert!(
        answer.contains("does not belong to the certificate"),
        "{answer}"
    );
    assert!(healthz(&first.ca), "the running certificate stays");
    // The whole renewal: served from the next connection on.
    std::fs::copy(&second.cert, &cert).expect("new cert");
    let answer = reload(&first.ca);
    assert!(answer.contains("\"reloaded\":true"), "{answer}");
    assert!(healthz(&second.ca));
    assert!(!healthz(&first.ca));
}

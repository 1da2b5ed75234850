//! Slow and hostile clients: connections that send nothing, headers or bodies that never end,
//! and many idle connections held while others need service.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::Daemon;

const SETTLE: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection; returns what it sent.
fn read_until_closed(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(SETTLE)).expect("read timeout");
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => String::from_utf8_lossy(&answer).into_owned(),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
            String::from_utf8_lossy(&answer).into_owned()
        }
        Err(error) => panic!("the server never closed the connection: {error}"),
    }
}

#[test]
fn a_connection_that_sends_nothing_or_half_a_header_is_closed() {
    let daemon = Daemon::start("header_timeout = \"300ms\"\nbody_timeout = \"300ms\"\n");
    let mut silent = TcpStream::connect(daemon.addr).expect("connect");
    assert_eq!(read_until_closed(&mut silent), "", "closed without a word");

    let mut slowloris = TcpStream::connect(daemon.addr).expect("connect");
    slowloris
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .expect("write");
    let answer = read_until_closed(&mut slowloris);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // Headers complete, a body promised and never sent: 408 with a message, nothing counted.
    let mut stalled = TcpStream::connect(daemon.addr).expect("connect");
    stalled
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"type\":",
        )
        .expect("write");
    let answer = read_until_closed(&mut stalled);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_timeout"), "{answer}");

    assert_eq!(daemon.get("/healthz", None).0, 200);
}

#[test]
fn five_hundred_idle_connections_do_not_stop_others_being_served() {
    let daemon = Daemon::start("header_timeout = \"60s\"\n");
    let idle: Vec<TcpStream> = (0..500)
        .map(|_| TcpStream::connect(daemon.addr).expect("connect"))
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for n in 0..200 {
        let begun = Instant::now();
        if n % 2 == 0 {
            let (status, _, body) = daemon.get("/metrics", None);
            assert_eq!(status, 200);
            assert!(body.contains("haios_build_info"));
        } else {
            let answer = daemon.post_events(&json!({
                "type": "llm_usage", "event_id": format!("e{n}"), "agent": "a", "model": "gpt-4o",
                "input_tokens": 10, "output_tokens": 1
            }));
            assert_eq!(answer["accepted"], 1);
        }
        latencies.push(begun.elapsed());
    }
    latencies.sort();
    // Figures for RELIABILITY.md; the assertion is that all 200 were served.
    eprintln!(
        "served 200 requests with 500 idle connections open in {:?}: median {:?}, p99 {:?}",
        started.elapsed(),
        latencies[100],
        latencies[197]
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
        Some(100.0)
    );
    drop(idle);
}

#[test]
fn beyond_the_connection_cap_clients_wait_and_are_served_once_a_slot_frees() {
    let daemon = Daemon::start("max_connections = 16\nheader_timeout = \"60s\"\n");
    let mut hogs: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(daemon.addr).expect("connect"))
        .collect();
    // The 17th client connects (the kernel's backlog takes it) but is not answered yet.
    let mut waiting = TcpStream::connect(daemon.addr).expect("connect");
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("write");
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut first = [0u8; 1];
    let early = waiting.read(&mut first);
    assert!(
        early.is_err(),
        "not served while 16 connections hold every slot: {early:?}"
    );
    crate::util::wait_for("the cap to be logged", SETTLE, || {
        (daemon.log_count("connection cap reached") > 0).then_some(())
    });
    // One hog leaves: the waiting client gets its answer.
    drop(hogs.pop());
    let answer = read_until_closed(&mut waiting);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

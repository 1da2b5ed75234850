#!/usr/bin/env python3
"""Reads beside writes: status, page and report latency on a busy store, and how much polling
them slows the acknowledgement of one event.

    benches/reads_beside_writes.py [--events 500000] [--bin target/release/costmeter]

Fills a fresh store through the API with EVENTS usage events spread over the last six days
(NDJSON batches of 5,000, 40 agent/model pairs), then in the same run:
  1. GET /v1/status, GET / and GET /v1/report?window=7d, 20 times each: median and p99;
  2. POST of one event, 400 times, quiet: p50 and p99 of the acknowledgement;
  3. the same while two clients poll /v1/status and / without pause.
Prints each figure and the ratio polled / quiet; exits 1 if an acknowledged event is missing.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

PORT = 18400
BASE = f"http://127.0.0.1:{PORT}"


def request(method, path, body=None, content_type="application/json"):
    req = urllib.request.Request(BASE + path, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", content_type)
    started = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as response:
        payload = response.read()
    return payload, time.perf_counter() - started


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def wait_ready():
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("costmeter did not start")


def fill(events):
    now = time.time()
    span = 6 * 86400
    sent = 0
    batch = 5000
    started = time.perf_counter()
    while sent < events:
        lines = []
        for i in range(sent, min(events, sent + batch)):
            ts = now - span + span * i / events
            lines.append(json.dumps({
                "type": "llm_usage", "event_id": f"fill-{i}",
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
                "agent": f"agent-{i % 8}", "model": ["gpt-5", "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro", "o3"][i % 5],
                "input_tokens": 1000, "cache_read_tokens": 200, "output_tokens": 100,
            }))
        payload, _ = request("POST", "/v1/events", "\n".join(lines).encode(), "application/x-ndjson")
        assert json.loads(payload)["accepted"] == len(lines), payload
        sent += len(lines)
    return events / (time.perf_counter() - started)


def acks(count, tag):
    seconds = []
    for i in range(count):
        body = json.dumps({"type": "llm_usage", "event_id": f"{tag}-{i}", "agent": "probe",
                           "model": "gpt-5", "input_tokens": 10, "output_tokens": 1}).encode()
        _, took = request("POST", "/v1/events", body)
        seconds.append(took)
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--bin", default="target/release/costmeter")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="costmeter-reads-")
    config = os.path.join(work, "costmeter.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{PORT}"\n\n[budgets]\nusd = 1e6\n')
    daemon = subprocess.Popen([os.path.abspath(args.bin), "run", "--config", config], cwd=work,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready()
        rate = fill(args.events)
        print(f"store: {args.events} events over 6 days, filled at {rate:,.0f} events/s")
        for path in ["/v1/status", "/", "/v1/report?window=7d"]:
            times = [request("GET", path)[1] for _ in range(20)]
            print(f"GET {path}: median {statistics.median(times) * 1000:.1f} ms, "
                  f"p99 {percentile(times, 99) * 1000:.1f} ms")
        quiet = acks(400, "quiet")
        stop = threading.Event()

        def poll(path):
            while not stop.is_set():
                request("GET", path)

        pollers = [threading.Thread(target=poll, args=(p,)) for p in ["/v1/status", "/"]]
        for t in pollers:
            t.start()
        polled = acks(400, "polled")
        stop.set()
        for t in pollers:
            t.join()
        for name, values in [("quiet", quiet), ("polled", polled)]:
            print(f"ack {name}: p50 {percentile(values, 50) * 1000:.2f} ms, "
                  f"p99 {percentile(values, 99) * 1000:.2f} ms")
        print(f"ratio polled / quiet: p50 {percentile(polled, 50) / percentile(quiet, 50):.2f}, "
              f"p99 {percentile(polled, 99) / percentile(quiet, 99):.2f}")
        metrics, _ = request("GET", "/metrics")
        accepted = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.decode().splitlines()
                       if line.startswith("haios_events_total{") and 'result="accepted"' in line)
        expected = args.events + 800
        if accepted != expected:
            sys.exit(f"{accepted:.0f} events counted of {expected} acknowledged")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Soak: minutes of mixed load on a release costmeter, recording RSS, open fds and p99 latency
every 10 s. Not part of `cargo test`; see RELIABILITY.md.

    benches/soak.py [--minutes 10] [--bin target/release/costmeter]

Load, all at once: usage events (single and NDJSON batches of 100) and OTLP/JSON spans, a
scrape of /metrics every second, a target process tree whose children come and go every
fraction of a second and whose root is replaced every 45 s, and a config reload every 30 s.
At the end it checks that every acknowledged event is counted, and that memory and open fds
levelled off: the last third's peak RSS within 10 % of the middle third's, fds back to where
they were after the first minute (within 8). Exits 1 if not. Standard library only.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

PORT = 18300
BASE = f"http://127.0.0.1:{PORT}"


def request(method, path, body=None, content_type="application/json"):
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        payload, status = error.read(), error.code
    return status, payload, time.perf_counter() - started


class Recorder:
    """Latencies and counts, collected by every load thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = []
        self.accepted = 0
        self.spans = 0
        self.failures = 0

    def note(self, seconds, accepted=0, spans=0, ok=True):
        with self.lock:
            self.latencies.append(seconds)
            self.accepted += accepted
            self.spans += spans
            self.failures += 0 if ok else 1

    def take_latencies(self):
        with self.lock:
            taken, self.latencies = self.latencies, []
        return taken


def p99(values):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))]


def events_loop(stop, recorder, worker):
    n = 0
    while not stop.is_set():
        n += 1
        if n % 5 == 0:
            lines = [
                json.dumps({"type": "llm_usage", "event_id": f"w{worker}-b{n}-{i}", "agent": f"agent-{i % 3}",
                            "model": "gpt-4o", "input_tokens": 1000, "cache_read_tokens": 100, "output_tokens": 50})
                for i in range(100)
            ]
            status, payload, seconds = request("POST", "/v1/events", "\n".join(lines), "application/x-ndjson")
        else:
            event = {"type": "llm_usage", "event_id": f"w{worker}-s{n}", "agent": "agent-0",
                     "model": "claude-sonnet-4-5", "input_tokens": 2000, "output_tokens": 100}
            status, payload, seconds = request("POST", "/v1/events", json.dumps(event))
        accepted = json.loads(payload).get("accepted", 0) if status == 202 else 0
        recorder.note(seconds, accepted=accepted, ok=status == 202)
        time.sleep(0.005)


def otlp_loop(stop, recorder):
    n = 0
    while not stop.is_set():
        n += 1
        spans = [{
            "traceId": f"{n:032x}", "spanId": f"{i + 1:016x}", "name": "chat",
            "endTimeUnixNano": str(time.time_ns()),
            "attributes": [
                {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
                {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "300"}},
                {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "30"}},
            ],
        } for i in range(50)]
        body = {"resourceSpans": [{"resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "otlp-agent"}}]},
            "scopeSpans": [{"spans": spans}]}]}
        status, _, seconds = request("POST", "/v1/traces", json.dumps(body))
        recorder.note(seconds, spans=50 if status == 200 else 0, ok=status == 200)
        time.sleep(0.05)


def scrape_loop(stop, recorder):
    while not stop.is_set():
        status, _, seconds = request("GET", "/metrics")
        recorder.note(seconds, ok=status == 200)
        stop.wait(1.0)


def reload_loop(stop, recorder, config_path, config_text):
    flip = False
    while not stop.wait(30.0):
        flip = not flip
        interval = "250ms" if flip else "200ms"
        with open(config_path, "w") as f:
            f.write(config_text.replace('sample_interval = "200ms"', f'sample_interval = "{interval}"'))
        status, _, seconds = request("POST", "/v1/reload", b"")
        recorder.note(seconds, ok=status == 200)


AGENT = r"""
exec -a soak-agent bash -c '
  while :; do
    ( head -c 200000 /dev/urandom | sha256sum >/dev/null ) &
    ( sleep 0.$((RANDOM % 5)) ) &
    sleep 0.1
  done'
"""


def agent_loop(stop, pid_file):
    while not stop.is_set():
        agent = subprocess.Popen(["bash", "-c", AGENT], start_new_session=True)
        with open(pid_file + ".tmp", "w") as f:
            f.write(f"{agent.pid}\n")
        os.replace(pid_file + ".tmp", pid_file)
        stop.wait(45.0)
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()


def process_figures(pid):
    with open(f"/proc/{pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_kib / 1024.0, fds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--bin", default="target/release/costmeter")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="costmeter-soak-")
    pid_file = os.path.join(work, "agent.pid")
    config_path = os.path.join(work, "costmeter.toml")
    config_text = f"""[server]
listen = "127.0.0.1:{PORT}"
[store]
path = "{work}/costmeter.db"
[[target]]
name = "agent"
pid_file = "{pid_file}"
sample_interval = "200ms"
[budgets]
usd = 1000000
"""
    with open(config_path, "w") as f:
        f.write(config_text)
    stop = threading.Event()
    threading.Thread(target=agent_loop, args=(stop, pid_file), daemon=True).start()
    while not os.path.exists(pid_file):
        time.sleep(0.05)
    log = open(os.path.join(work, "costmeter.log"), "w")
    daemon = subprocess.Popen([args.bin, "run", "--config", config_path], stderr=log,
                              env={**os.environ, "COSTMETER_LOG": "warn"})
    while True:
        try:
            if request("GET", "/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.1)
    recorder = Recorder()
    threads = [threading.Thread(target=events_loop, args=(stop, recorder, w), daemon=True) for w in range(2)]
    threads += [
        threading.Thread(target=otlp_loop, args=(stop, recorder), daemon=True),
        threading.Thread(target=scrape_loop, args=(stop, recorder), daemon=True),
        threading.Thread(target=reload_loop, args=(stop, recorder, config_path, config_text), daemon=True),
    ]
    for thread in threads:
        thread.start()
    samples = []
    print("t_s,rss_mib,fds,p99_ms,requests,events_accepted,spans_accepted,failures", flush=True)
    started = time.time()
    while time.time() - started < args.minutes * 60:
        time.sleep(10.0)
        rss, fds = process_figures(daemon.pid)
        latencies = recorder.take_latencies()
        row = (round(time.time() - started), rss, fds, p99(latencies) * 1000, len(latencies),
               recorder.accepted, recorder.spans, recorder.failures)
        samples.append(row)
        print("%d,%.1f,%d,%.1f,%d,%d,%d,%d" % row, flush=True)
    stop.set()
    for thread in threads:
        thread.join(timeout=35)
    _, metrics, _ = request("GET", "/metrics")
    counted = {"http": 0.0, "otlp": 0.0}
    target_cpu = 0.0
    for line in metrics.decode().splitlines():
        if line.startswith('haios_cpu_seconds_total{target="agent"'):
            target_cpu = float(line.rsplit(" ", 1)[1])
        if line.startswith("haios_events_total{") and 'type="llm_usage"' in line and 'result="accepted"' in line:
            source = "otlp" if 'source="otlp"' in line else "http"
            counted[source] += float(line.rsplit(" ", 1)[1])
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)
    third = max(1, len(samples) // 3)
    middle = max(r[1] for r in samples[third:2 * third] or samples)
    last = max(r[1] for r in samples[2 * third:] or samples)
    rss = [r[1] for r in samples]
    fds = [r[2] for r in samples]
    after_warmup_fds = samples[min(5, len(samples) - 1)][2]
    summary = {
        "minutes": args.minutes,
        "rss_mib": {"start": rss[0], "max": max(rss), "end": rss[-1], "middle_third_max": middle, "last_third_max": last},
        "fds": {"start": fds[0], "max": max(fds), "end": fds[-1]},
        "p99_ms": {"median_of_intervals": sorted(r[3] for r in samples)[len(samples) // 2], "max": max(r[3] for r in samples)},
        "requests": sum(r[4] for r in samples),
        "failures": recorder.failures,
        "events_acknowledged": recorder.accepted, "events_counted": counted["http"],
        "spans_acknowledged": recorder.spans, "spans_counted": counted["otlp"],
        "agent_tree_cpu_seconds": target_cpu,
    }
    print(json.dumps(summary), flush=True)
    problems = []
    if counted["http"] != recorder.accepted or counted["otlp"] != recorder.spans:
        problems.append("acknowledged usage and counted usage differ")
    if last > middle * 1.10:
        problems.append(f"RSS still growing: last third peaked at {last:.1f} MiB, middle third at {middle:.1f} MiB")
    if fds[-1] > after_warmup_fds + 8:
        problems.append(f"fds grew from {after_warmup_fds} to {fds[-1]}")
    if target_cpu <= 0:
        problems.append("the agent tree was never metered")
    if recorder.failures:
        problems.append(f"{recorder.failures} requests failed")
    shutil.rmtree(work, ignore_errors=True)
    if problems:
        print("soak: FAILED: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)
    print("soak: ok")


if __name__ == "__main__":
    main()

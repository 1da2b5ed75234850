#!/usr/bin/env python3
"""Time from a budget-crossing event to the target's SIGTERM handler running.

Each try starts `costmeter exec` (release build) around a small Python agent that notes the
time its SIGTERM handler runs, waits until costmeter meters it, posts one llm_usage event that
crosses a token budget, and takes two figures: from sending the event, and from receiving its
acknowledgement, to the handler. The second can be negative: the kill order leaves before the
2xx does. Prints p50 and p99 of both over all tries.

    cargo build --release && python3 benches/kill_latency.py [TRIES=200]
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "..", "target", "release", "costmeter")
AGENT = r"""
import signal, sys, time
def on_term(signum, frame):
    sys.stdout.write("%d\n" % time.time_ns())
    sys.stdout.flush()
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read()


def one_try(workdir):
    port = free_port()
    config = os.path.join(workdir, "c.toml")
    with open(config, "w") as f:
        f.write('[server]\nlisten = "127.0.0.1:%d"\n[store]\npath = "%s/c-%d.db"\n'
                '[budgets]\ntokens = 1000\n[enforcement]\ngrace = "5s"\n' % (port, workdir, port))
    proc = subprocess.Popen([BIN, "exec", "--config", config, "--", sys.executable, "-c", AGENT],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, COSTMETER_LOG="warn"), text=True)
    assert proc.stdout.readline().strip() == "ready"
    base = "http://127.0.0.1:%d" % port
    deadline = time.time() + 10
    while True:
        try:
            _, metrics = http(base + "/metrics")
            if b'haios_target_up{target="agent"} 1' in metrics:
                break
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError("costmeter did not meter the agent")
        time.sleep(0.01)
    event = json.dumps({"type": "llm_usage", "agent": "bench", "model": "gpt-5",
                        "input_tokens": 2000, "output_tokens": 1}).encode()
    sent = time.time_ns()
    status, _ = http(base + "/v1/events", event)
    acked = time.time_ns()
    assert status == 202
    handled = int(proc.stdout.readline())
    proc.wait(timeout=10)
    assert proc.returncode == 86, proc.returncode
    return (handled - sent) / 1e6, (handled - acked) / 1e6


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    tries = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    from_send, from_ack = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(tries):
            a, b = one_try(workdir)
            from_send.append(a)
            from_ack.append(b)
    print("tries=%d" % tries)
    print("event sent -> SIGTERM handler ran: p50=%.2f ms p99=%.2f ms max=%.2f ms"
          % (statistics.median(from_send), percentile(from_send, 99), max(from_send)))
    print("2xx received -> SIGTERM handler ran: p50=%.2f ms p99=%.2f ms max=%.2f ms"
          % (statistics.median(from_ack), percentile(from_ack, 99), max(from_ack)))


if __name__ == "__main__":
    main()

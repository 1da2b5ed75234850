#!/usr/bin/env python3
"""Claude Code's statusline and hook, end to end: the wall time of `costmeter statusline` and
`costmeter hook claude-code` (process start, Claude Code's JSON on stdin, one request to the
daemon, the line or the verdict), beside `curl -s /v1/budgets` (process start and one request:
the floor for any command that asks the daemon) in the same run. Claude Code runs the statusline
command at most every 300 ms and waits on it: the aim is < 50 ms. See BENCHMARKS.md.

    benches/statusline.py [ROUNDS]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(HERE, "target", "release", "costmeter")
PORT = 18390
URL = f"http://127.0.0.1:{PORT}"
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 200

STATUSLINE = json.dumps({
    "hook_event_name": "Status", "session_id": "bench", "transcript_path": "/tmp/t.jsonl",
    "cwd": "/work", "model": {"id": "claude-opus-4-8", "display_name": "Opus"},
    "workspace": {"current_dir": "/work", "project_dir": "/work"}, "version": "2.1.0",
    "cost": {"total_cost_usd": 0.42, "total_duration_ms": 1000},
}).encode()
HOOK = json.dumps({
    "session_id": "bench", "transcript_path": "/tmp/t.jsonl", "cwd": "/work",
    "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"},
}).encode()


def timed(argv, stdin, env=None):
    start = time.perf_counter()
    done = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    elapsed = (time.perf_counter() - start) * 1000
    return elapsed, done


def figures(name, samples, base=None):
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    ratio = f" ratio_p50={p50 / base:.2f}" if base else ""
    print(f"{name}: p50_ms={p50:.2f} p99_ms={p99:.2f} max_ms={samples[-1]:.2f}{ratio}")
    return p50


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "costmeter"], cwd=HERE, check=True)
    with tempfile.TemporaryDirectory() as work:
        config = os.path.join(work, "c.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{PORT}"\n[store]\npath = "{work}/c.db"\n\n'
                    '[[budget]]\nname = "daily"\nresource = "usd"\nlimit = 5.0\nwindow = "day"\nagent = "claude-code"\n\n'
                    '[[budget]]\nname = "weekly"\nresource = "usd"\nlimit = 20.0\nwindow = "week"\n')
        daemon = subprocess.Popen([BIN, "run", "--config", config], stderr=subprocess.DEVNULL,
                                  env={**os.environ, "COSTMETER_LOG": "warn"})
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(URL + "/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            body = json.dumps([{"type": "llm_usage", "agent": "claude-code", "model": "claude-opus-4-8",
                                "input_tokens": 1000, "output_tokens": 100, "cost_usd": 1.25}]).encode()
            urllib.request.urlopen(urllib.request.Request(URL + "/v1/events", body, {"Content-Type": "application/json"}))
            env = {**os.environ, "COSTMETER_URL": URL}
            curl, line, hook = [], [], []
            for _ in range(ROUNDS):
                curl.append(timed(["curl", "-s", URL + "/v1/budgets"], None)[0])
                elapsed, done = timed([BIN, "statusline"], STATUSLINE, env)
                assert done.returncode == 0 and b"daily" in done.stdout, done
                line.append(elapsed)
                elapsed, done = timed([BIN, "hook", "claude-code"], HOOK, env)
                assert done.returncode == 0, done
                hook.append(elapsed)
            _, shown = timed([BIN, "statusline"], STATUSLINE, env)
            print(f"rounds={ROUNDS}; the line: {shown.stdout.decode().strip()}")
            base = figures("curl /v1/budgets (baseline)", curl)
            figures("costmeter statusline", line, base)
            figures("costmeter hook claude-code", hook, base)
        finally:
            daemon.terminate()
            daemon.wait()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fleet budgets on Redis, measured against Debian's redis-server on loopback (append-only file,
fsync every second, as Redis ships AOF). Three figures, each against a baseline in the same run:

1. Admission's added latency: one closed-loop caller through costmeter's proxy with a local hard
   USD budget (the baseline: a reservation in the ledger) and with a fleet hard USD budget (the
   same plus the reservation script on Redis); the stand-in called directly for reference.
2. Overshoot: three sidecars under one $1 fleet budget, 32 callers each at once, until it is
   spent: what the provider billed beyond $1.
3. Crossing to stop: three `costmeter exec` sidecars under one $3 fleet budget (soft_kill); $1
   on two of them, then the crossing $1.5 on the third: time from that POST until the agents of
   the other two have exited (pushed through Redis pub/sub), beside the time until the third's
   own agent (the local path) has.

    benches/fleet_redis.py [SECONDS] [ROUNDS] [TRIALS]

See BENCHMARKS.md, "Fleet budgets on Redis".
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import alive, free_port, post, wait  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(HERE, "target", "release", "costmeter")
BENCH = os.path.join(HERE, "target", "release", "examples", "proxy_bench")
SECONDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
TRIALS = int(sys.argv[3]) if len(sys.argv) > 3 else 20
# The stand-in's usage per call (21 input, 9 output tokens of gpt-4o) at the baseline's prices.
PER_CALL = (21 * 2.50 + 9 * 10.0) / 1e6






def get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return json.load(answer)
    except (OSError, ValueError):
        return None






def used(port, budget):
    answer = get(f"http://127.0.0.1:{port}/v1/budgets") or {"budgets": []}
    for b in answer["budgets"]:
        if b["name"] == budget:
            return b["used"], b["reserved"]
    return None, None


class Stack:
    def __init__(self, work):
        self.work = work
        self.procs = []

    def spawn(self, args, **kw):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def sidecar(self, name, body, exec_args=None):
        port = free_port()
        config = os.path.join(self.work, f"{name}.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{port}"\n[store]\npath = "{self.work}/{name}.db"\n{body}')
        args = [BIN, "run", "--config", config] if exec_args is None else [BIN, "exec", "--config", config, "--", *exec_args]
        process = self.spawn(args, env={**os.environ, "COSTMETER_LOG": "warn"})
        wait(f"sidecar {name}", lambda: get(f"http://127.0.0.1:{port}/v1/status") is not None)
        return port, process

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait()
        self.procs = []


def proxy_body(standin, budget):
    return (f'[proxy]\nenabled = true\n[[proxy.upstream]]\nname = "openai"\nprovider = "openai"\n'
            f'base_url = "http://127.0.0.1:{standin}"\n{budget}')


def fleet(redis, namespace, instance):
    return f'[fleet]\nredis_url = "redis://127.0.0.1:{redis}"\nname = "{namespace}"\ninstance = "{instance}"\n'


def budget(name, limit, is_fleet, on_exceed="soft_kill", window="month"):
    return (f'[[budget]]\nname = "{name}"\nresource = "usd"\nlimit = {limit}\nwindow = "{window}"\n'
            f'on_exceed = "{on_exceed}"\n' + ("fleet = true\n" if is_fleet else ""))


def load(url, callers, seconds):
    out = subprocess.run([BENCH, "load", url, str(callers), str(seconds)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def latency(stack, redis, standin):
    local, _ = stack.sidecar("lat-local", proxy_body(standin, budget("hard-usd", 1e9, False)))
    shared, _ = stack.sidecar("lat-fleet", fleet(redis, "lat", "lat-fleet") +
                              proxy_body(standin, budget("team-usd", 1e9, True)))
    paths = {
        "direct": f"http://127.0.0.1:{standin}/v1/chat/completions",
        "local budget": f"http://127.0.0.1:{local}/proxy/openai/v1/chat/completions",
        "fleet budget": f"http://127.0.0.1:{shared}/proxy/openai/v1/chat/completions",
    }
    rows = {}
    for name, url in paths.items():
        load(url, 4, 2)  # warm the pools
        runs = [load(url, 1, SECONDS) for _ in range(ROUNDS)]
        rows[name] = (statistics.median(r["p50_ms"] for r in runs), statistics.median(r["p99_ms"] for r in runs),
                      statistics.median(r["calls"] for r in runs), sum(r["refused"] + r["failures"] for r in runs))
    print(f"admission latency, one caller, median of {ROUNDS} rounds of {SECONDS}s")
    base50, base99 = rows["local budget"][0], rows["local budget"][1]
    for name, (p50, p99, calls, bad) in rows.items():
        print(f"  {name:<13} p50_ms={p50:.3f} p99_ms={p99:.3f} calls={calls} refused_or_failed={bad} "
              f"vs_local_p50={p50 - base50:+.3f} vs_local_p99={p99 - base99:+.3f}", flush=True)


def overshoot(stack, redis, standin):
    ports = [stack.sidecar(f"over-{n}", fleet(redis, "over", f"over-{n}") +
                           proxy_body(standin, budget("team-usd", 1.0, True)))[0] for n in range(3)]
    before = get(f"http://127.0.0.1:{standin}/calls")
    runs = [subprocess.Popen([BENCH, "load", f"http://127.0.0.1:{p}/proxy/openai/v1/chat/completions", "32", str(SECONDS)],
                             stdout=subprocess.PIPE, text=True) for p in ports]
    results = [json.loads(r.communicate()[0]) for r in runs]
    after = get(f"http://127.0.0.1:{standin}/calls")
    billed = (after - before) * PER_CALL
    sent = sum(r["calls"] + r["refused"] for r in results)
    wait("the sidecars to settle", lambda: all(used(p, "team-usd")[1] == 0 for p in ports))
    seen = [used(p, "team-usd")[0] for p in ports]
    print(f"overshoot: $1 fleet budget, 3 sidecars x 32 callers for {SECONDS}s: {sent} calls sent, "
          f"{after - before} reached the provider, billed ${billed:.4f}, beyond $1: ${max(billed - 1, 0):.4f}; "
          f"refused {sum(r['refused'] for r in results)}; each sidecar's used {' '.join(f'${u:.4f}' for u in seen)}",
          flush=True)


def crossing(stack, redis, trial):
    namespace = f"cross{trial}"
    pids = []
    ports = []
    for n in range(3):
        pidfile = os.path.join(stack.work, f"{namespace}-{n}.pid")
        port, _ = stack.sidecar(f"{namespace}-{n}", fleet(redis, namespace, f"x{n}") + budget("team-usd", 3.0, True) +
                                '[enforcement]\ngrace = "5s"\n',
                                exec_args=["sh", "-c", f"echo $$ > {pidfile}; while :; do sleep 0.05; done"])
        wait("the agent's pid", lambda: os.path.exists(pidfile) and open(pidfile).read().strip())
        pids.append(int(open(pidfile).read()))
        ports.append(port)
    post(ports[0], 1.0)
    post(ports[1], 1.0)
    wait("the third sidecar to see $2", lambda: used(ports[2], "team-usd")[0] == 2.0)
    start = time.monotonic()
    post(ports[2], 1.5)
    stopped = {}
    while len(stopped) < 3:
        for n, pid in enumerate(pids):
            if n not in stopped and not alive(pid):
                stopped[n] = time.monotonic() - start
        if time.monotonic() - start > 30:
            raise SystemExit("an agent was not stopped within 30 s")
        time.sleep(0.001)
    return stopped[2], max(stopped[0], stopped[1])


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "costmeter", "--example", "proxy_bench"],
                   cwd=HERE, check=True)
    with tempfile.TemporaryDirectory() as work:
        stack = Stack(work)
        try:
            redis = free_port()
            stack.spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(redis), "--save", "",
                         "--appendonly", "yes", "--appendfsync", "everysec", "--dir", work])
            standin = free_port()
            stack.spawn([BENCH, "standin", f"127.0.0.1:{standin}"])
            wait("the stand-in", lambda: get(f"http://127.0.0.1:{standin}/calls") is not None)
            latency(stack, redis, standin)
            overshoot(stack, redis, standin)
            local, remote = [], []
            for trial in range(TRIALS):
                own, others = crossing(stack, redis, trial)
                local.append(own)
                remote.append(others)
            for name, times in [("the crossing sidecar's own agent", local), ("the other two sidecars' agents", remote)]:
                times = sorted(t * 1000 for t in times)
                print(f"crossing to stop, {name}: trials={TRIALS} median_ms={statistics.median(times):.1f} "
                      f"min_ms={times[0]:.1f} max_ms={times[-1]:.1f}", flush=True)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()

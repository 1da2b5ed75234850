#!/usr/bin/env python3
"""The fleet alert path's latency: time from the event that crosses a fleet budget to the stop of
the last of three agents, through real Prometheus and Alertmanager on the shipped files (three
release sidecars, FleetBudgetExceeded, the enforcement receiver listing all three), with the
shipped intervals (scrape 5 s, evaluation 15 s, group_wait 0 s on the enforcement route) and
with fast ones (scrape and evaluation 1 s). Each trial starts the whole stack afresh. See
BENCHMARKS.md, "Fleet budgets through Prometheus and Alertmanager".

    benches/fleet_alert_latency.py [TRIALS]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import alive, free_port, post, wait  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(HERE, "target", "release", "costmeter")
TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 10






def ok(url):
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False




def prom_count(port, query):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    try:
        answer = json.load(urllib.request.urlopen(url, timeout=2))
        return len(answer["data"]["result"])
    except (OSError, KeyError, ValueError):
        return 0


def trial(work, fast):
    procs = []
    ports = [free_port() for _ in range(3)]
    prom, am = free_port(), free_port()
    marker = f"fleet-bench-{os.getpid()}-{time.monotonic_ns()}"
    agents = [subprocess.Popen(["sh", "-c", f"while :; do sleep 0.05; done # {marker}-{n}"]) for n in range(3)]
    try:
        for n, port in enumerate(ports):
            config = os.path.join(work, f"c{n}.toml")
            with open(config, "w") as f:
                f.write(f'[server]\nlisten = "127.0.0.1:{port}"\n[store]\npath = "{work}/c{n}-{marker}.db"\n'
                        f'[[target]]\nname = "agent"\nmatch = {{ cmdline = "{marker}-{n}" }}\nsample_interval = "1s"\n'
                        '[[budget]]\nname = "fleet-team"\nresource = "usd"\nlimit = 3.0\nwindow = "day"\non_exceed = "alert"\n')
            procs.append(subprocess.Popen([BIN, "run", "--config", config], stderr=subprocess.DEVNULL,
                                          env={**os.environ, "COSTMETER_LOG": "warn"}))
        rules = os.path.join(work, "rules")
        os.makedirs(rules, exist_ok=True)
        with open(os.path.join(HERE, "alertmanager", "costmeter_rules.yml")) as f:
            open(os.path.join(rules, "costmeter_rules.yml"), "w").write(f.read())
        text = open(os.path.join(HERE, "config", "prometheus.yml")).read()
        text = text.replace('"costmeter:8000"', ", ".join(f'"127.0.0.1:{p}"' for p in ports))
        text = text.replace("alertmanager:9093", f"127.0.0.1:{am}").replace("/etc/prometheus/rules/", rules + "/")
        if fast:
            text = text.replace("scrape_interval: 15s", "scrape_interval: 1s").replace("scrape_interval: 5s", "scrape_interval: 1s")
            text = text.replace("evaluation_interval: 15s", "evaluation_interval: 1s")
        open(os.path.join(work, "prometheus.yml"), "w").write(text)
        text = open(os.path.join(HERE, "alertmanager", "alertmanager.yml")).read()
        line = "      - url: http://costmeter:8000/v1/alerts\n"
        start = text.index(line)
        end = text.index("send_resolved: true\n", start) + len("send_resolved: true\n")
        block = text[start:end]
        text = text[:start] + "".join(block.replace("costmeter:8000", f"127.0.0.1:{p}") for p in ports) + text[end:]
        text = text.replace("http://budget-webhook:9099/hook", "http://127.0.0.1:9/hook")
        open(os.path.join(work, "alertmanager.yml"), "w").write(text)
        procs.append(subprocess.Popen(["prometheus-alertmanager", f"--config.file={work}/alertmanager.yml",
                                       f"--storage.path={work}/am-{marker}", f"--web.listen-address=127.0.0.1:{am}",
                                       "--cluster.listen-address="], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["prometheus", f"--config.file={work}/prometheus.yml",
                                       f"--storage.tsdb.path={work}/prom-{marker}", f"--web.listen-address=127.0.0.1:{prom}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait("a sidecar", lambda: ok(f"http://127.0.0.1:{port}/readyz"))
        wait("Alertmanager", lambda: ok(f"http://127.0.0.1:{am}/-/ready"))
        wait("three fleet budgets in Prometheus",
             lambda: prom_count(prom, 'haios_budget_limit{budget="fleet-team"}') == 3)
        for port in ports[:2]:
            post(port, 1.0)
        # The crossing: $1 + $1 + $1 of $3. Wait first until Prometheus has the first two, so
        # the crossing event is the one that moves the sum.
        wait("the first two sidecars' spend in Prometheus",
             lambda: prom_count(prom, 'sum(haios_budget_used{budget="fleet-team"}) >= 2') == 1)
        start = time.monotonic()
        post(ports[2], 1.0)
        stopped = []
        for agent in agents:
            wait("an agent to be stopped", lambda: not alive(agent.pid), limit=120)
            stopped.append(time.monotonic() - start)
        return max(stopped)
    finally:
        for p in procs + agents:
            p.terminate()
        for p in procs + agents:
            p.wait()




def main():
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "costmeter"], cwd=HERE, check=True)
    with tempfile.TemporaryDirectory() as work:
        for name, fast in [("shipped (scrape 5 s, evaluation 15 s)", False), ("fast (scrape 1 s, evaluation 1 s)", True)]:
            times = [trial(work, fast) for _ in range(TRIALS)]
            times.sort()
            print(f"{name}: trials={TRIALS} median_s={statistics.median(times):.2f} "
                  f"min_s={times[0]:.2f} max_s={times[-1]:.2f} all={' '.join(f'{t:.2f}' for t in times)}", flush=True)


if __name__ == "__main__":
    main()

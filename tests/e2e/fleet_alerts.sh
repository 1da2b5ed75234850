#!/usr/bin/env bash
# End-to-end check of the fleet alert path with the real programs and the shipped files: three
# costmeter sidecars, each metering its own agent, scraped by one Prometheus running the bundled
# rules; one Alertmanager on the bundled config whose enforcement receiver lists all three
# sidecars' /v1/alerts. It checks that
#   1. one sidecar's own budget alert (it carries that sidecar's instance) stops that sidecar's
#      agent and none of the others, though all three are told;
#   2. the fleet budget (a "fleet-" budget on every sidecar, summed by FleetBudgetExceeded)
#      crossing stops all three agents, and prints the time from the crossing event to each stop;
#   3. an agent relaunched while the fleet alert fires is stopped again by its sidecar.
#
#   tests/e2e/fleet_alerts.sh [path/to/costmeter]      (default target/debug/costmeter)
set -euo pipefail
name="fleet e2e"
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
now_ms() { date +%s%3N; }
prom_port=$(free_port); am_port=$(free_port)
ports=($(free_port) $(free_port) $(free_port))
marker="fleet-e2e-$$"

agent() { # agent N: starts sidecar N's agent, prints its pid
  sh -c "while :; do sleep 0.05; done # $marker-$1" > /dev/null 2>&1 &
  echo $!
}
agents=()
for n in 0 1 2; do
  agents[$n]=$(agent "$n"); pids+=("${agents[$n]}")
  cat > "$work/costmeter-$n.toml" <<EOF
[server]
listen = "127.0.0.1:${ports[$n]}"
[store]
path = "$work/costmeter-$n.db"
[[target]]
name = "agent"
match = { cmdline = "$marker-$n" }
sample_interval = "200ms"
# The fleet's budget: the same name and limit on every sidecar; FleetBudgetExceeded sums them.
[[budget]]
name = "fleet-team"
resource = "usd"
limit = 3.0
window = "day"
on_exceed = "alert"
# This sidecar's own budget, for the per-sidecar rule.
[[budget]]
name = "local"
resource = "usd"
limit = 0.5
agent = "coder-local"
window = "day"
on_exceed = "alert"
[enforcement]
grace = "2s"
EOF
  (cd "$work" && exec env COSTMETER_LOG=info "$bin" run --config "$work/costmeter-$n.toml" > "$work/costmeter-$n.log" 2>&1) & pids+=("$!")
done

# The shipped files: Prometheus scrapes the three sidecars every second and evaluates every
# second (the fast settings; the shipped 5 s / 15 s are measured in BENCHMARKS.md); the
# enforcement receiver lists all three sidecars.
mkdir -p "$work/rules"
cp "$root/alertmanager/costmeter_rules.yml" "$work/rules/"
targets="\"127.0.0.1:${ports[0]}\", \"127.0.0.1:${ports[1]}\", \"127.0.0.1:${ports[2]}\""
sed -e "s|\"costmeter:8000\"|$targets|; s|alertmanager:9093|127.0.0.1:$am_port|" \
    -e "s|/etc/prometheus/rules/|$work/rules/|" \
    -e "s|scrape_interval: 15s|scrape_interval: 1s|; s|scrape_interval: 5s|scrape_interval: 1s|; s|evaluation_interval: 15s|evaluation_interval: 1s|" \
    "$root/config/prometheus.yml" > "$work/prometheus.yml"
python3 - "$root/alertmanager/alertmanager.yml" "$work/alertmanager.yml" "${ports[@]}" <<'PY'
import sys
text = open(sys.argv[1]).read()
line = "      - url: http://costmeter:8000/v1/alerts\n"
start = text.index(line)
end = text.index("send_resolved: true\n", start) + len("send_resolved: true\n")
block = text[start:end]
text = text[:start] + "".join(block.replace("costmeter:8000", f"127.0.0.1:{p}") for p in sys.argv[3:]) + text[end:]
text = text.replace("http://budget-webhook:9099/hook", "http://127.0.0.1:9/hook").replace("group_wait: 5s", "group_wait: 1s")
open(sys.argv[2], "w").write(text)
PY
grep -q "127.0.0.1:${ports[2]}/v1/alerts" "$work/alertmanager.yml" || fail "alertmanager.yml no longer routes to costmeter:8000/v1/alerts"
promtool check config "$work/prometheus.yml" > "$work/promtool.log" 2>&1 || fail "promtool check config"
amtool check-config "$work/alertmanager.yml" > "$work/amtool.log" 2>&1 || fail "amtool check-config"
prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/am" \
  --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address="" > "$work/alertmanager.log" 2>&1 & pids+=("$!")
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 & pids+=("$!")

post() { curl -sf "http://127.0.0.1:${ports[$1]}/v1/events" -H 'Content-Type: application/json' -d "$2" > /dev/null; }
usage() { echo "{\"type\":\"llm_usage\",\"agent\":\"$1\",\"model\":\"gpt-5\",\"input_tokens\":100,\"output_tokens\":10,\"cost_usd\":$2}"; }
prom_query() {
  python3 - "http://127.0.0.1:$prom_port" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
answer = json.load(urllib.request.urlopen(url, timeout=5))
sys.exit(0 if answer.get("status") == "success" and answer["data"]["result"] else 1)
PY
}
# Notifications Alertmanager delivered to costmeter (three per alert group: one per sidecar).
delivered_at_least() {
  python3 - "http://127.0.0.1:$am_port/metrics" "$1" <<'PY'
import sys, urllib.request
sent = failed = 0.0
for line in urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().splitlines():
    if line.startswith('alertmanager_notifications_total{') and 'integration="webhook"' in line:
        sent += float(line.rsplit(" ", 1)[1])
    if line.startswith('alertmanager_notifications_failed_total{') and 'integration="webhook"' in line:
        failed += float(line.rsplit(" ", 1)[1])
# The budget webhook (port 9) fails by design; costmeter's deliveries are what is left.
sys.exit(0 if sent - failed >= float(sys.argv[2]) else 1)
PY
}
alive() { kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
dead() { ! alive "$1"; }

for n in 0 1 2; do await 30 "sidecar $n to be ready" curl -sf "http://127.0.0.1:${ports[$n]}/readyz"; done
await 60 "Prometheus to scrape all three sidecars" prom_query 'count(up{job="costmeter"} == 1) == 3'
await 30 "Alertmanager to be ready" curl -sf "http://127.0.0.1:$am_port/-/ready"
await 30 "Prometheus to see three fleet budgets" prom_query 'count(haios_budget_limit{budget="fleet-team"}) == 3'
say "three sidecars :${ports[*]}, Prometheus :$prom_port, Alertmanager :$am_port"

# 1. Sidecar 0's own budget: its alert carries instance=127.0.0.1:${ports[0]}; all three are told.
post 0 "$(usage coder-local 0.6)"
await 60 "sidecar 0's agent to be stopped by its own alert" dead "${agents[0]}"
await 30 "the local alert to reach all three sidecars" delivered_at_least 3
alive "${agents[1]}" || fail "sidecar 1's agent was stopped by sidecar 0's alert"
alive "${agents[2]}" || fail "sidecar 2's agent was stopped by sidecar 0's alert"
say "a sidecar's own alert, told to all three, stopped its agent only"

# 2. The fleet: $0.6 so far on sidecar 0; $0.8 more on each makes $3.0 of $3.0.
post 0 "$(usage coder 0.8)"
post 1 "$(usage coder 0.8)"
crossing=$(now_ms)
post 2 "$(usage coder 0.8)"
stopped=()
for n in 1 2; do
  await 60 "sidecar $n's agent to be stopped by the fleet alert" dead "${agents[$n]}"
  stopped[$n]=$(( $(now_ms) - crossing ))
done
prom_query 'ALERTS{alertname="FleetBudgetExceeded",alertstate="firing"}' || fail "FleetBudgetExceeded is not firing"
say "the fleet crossing stopped every agent (crossing to stop, polled at 0.2 s: ${stopped[1]} ms, ${stopped[2]} ms)"

# 3. A relaunch under the firing fleet alert is stopped again, without waiting for a repeat.
relaunched=$(agent 1); pids+=("$relaunched")
await 30 "the relaunched agent on sidecar 1 to be stopped again" dead "$relaunched"
grep -q "alert 'FleetBudgetExceeded' firing" "$work/costmeter-1.log" || fail "sidecar 1's log does not name the fleet alert"
say "an agent relaunched while the fleet alert fires was stopped again"
say "ok"

#!/usr/bin/env bash
# End-to-end check of the operations bundle with the real programs (Debian's prometheus and
# prometheus-alertmanager): costmeter is scraped by Prometheus running the bundled rules,
# Alertmanager runs the bundled config pointed at a local webhook and at costmeter; usage pushed
# past a budget must bring BudgetWarning, then BudgetExceeded to the webhook, and the target
# must be soft-killed through /v1/alerts. Then every PromQL expression of every dashboard panel
# and variable must parse and return data from that Prometheus.
#
#   tests/e2e/ops_bundle.sh [path/to/costmeter]      (default target/debug/costmeter)
set -euo pipefail
name="e2e"
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "$0")/lib.sh"
cm_port=$(free_port); prom_port=$(free_port); am_port=$(free_port); hook_port=$(free_port)

# The metered target: a process that Alertmanager's order must stop.
sleep 600 & victim=$!; pids+=("$victim")

# A webhook receiver that records every notification it gets.
cat > "$work/hook.py" <<'PY'
import http.server, sys
out = open(sys.argv[2], "a")
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        out.write(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode().strip() + "\n"); out.flush()
        self.send_response(204); self.end_headers()
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Hook).serve_forever()
PY
python3 "$work/hook.py" "$hook_port" "$work/notifications.jsonl" > "$work/hook.log" 2>&1 & pids+=("$!")

cat > "$work/costmeter.toml" <<EOF
[server]
listen = "127.0.0.1:$cm_port"
[store]
path = "$work/costmeter.db"
[[target]]
name = "agent"
pid = $victim
sample_interval = "200ms"
[[budget]]
name = "e2e-usd"
resource = "usd"
limit = 1.0
on_exceed = "alert"          # the kill must come through Alertmanager, not from costmeter itself
[enforcement]
grace = "2s"
EOF
# exec: the PID recorded is costmeter itself, so the cleanup stops it (a subshell would
# leave it running after the check).
(cd "$work" && exec env COSTMETER_LOG=info "$bin" run --config "$work/costmeter.toml" > "$work/costmeter.log" 2>&1) & pids+=("$!")

# The bundled configs, with the compose service names pointed at this machine's ports.
mkdir -p "$work/rules"
cp "$root/alertmanager/costmeter_rules.yml" "$work/rules/"
sed -e "s|costmeter:8000|127.0.0.1:$cm_port|; s|alertmanager:9093|127.0.0.1:$am_port|" \
    -e "s|/etc/prometheus/rules/|$work/rules/|" \
    -e "s|scrape_interval: 15s|scrape_interval: 1s|; s|scrape_interval: 5s|scrape_interval: 1s|; s|evaluation_interval: 15s|evaluation_interval: 1s|" \
    "$root/config/prometheus.yml" > "$work/prometheus.yml"
sed -e "s|http://budget-webhook:9099/hook|http://127.0.0.1:$hook_port/hook|; s|http://costmeter:8000/v1/alerts|http://127.0.0.1:$cm_port/v1/alerts|" \
    -e "s|group_wait: 5s|group_wait: 1s|" \
    "$root/alertmanager/alertmanager.yml" > "$work/alertmanager.yml"
grep -q "127.0.0.1:$cm_port" "$work/prometheus.yml" || fail "prometheus.yml no longer names costmeter:8000"
grep -q "127.0.0.1:$cm_port/v1/alerts" "$work/alertmanager.yml" || fail "alertmanager.yml no longer routes to costmeter:8000/v1/alerts"

promtool check config "$work/prometheus.yml" > "$work/promtool.log" 2>&1 || fail "promtool check config"
amtool check-config "$work/alertmanager.yml" > "$work/amtool.log" 2>&1 || fail "amtool check-config"

prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/am" \
  --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address="" \
  > "$work/alertmanager.log" 2>&1 & pids+=("$!")
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prom" \
  --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 & pids+=("$!")

post() { curl -sf "http://127.0.0.1:$cm_port/v1/events" -H 'Content-Type: application/json' -d "$1" > /dev/null; }
notified() { [ -f "$work/notifications.jsonl" ] && python3 - "$work/notifications.jsonl" "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    payload = json.loads(line)
    if any(a["labels"].get("alertname") == sys.argv[2] and a["status"] == "firing" for a in payload.get("alerts", [])):
        sys.exit(0)
sys.exit(1)
PY
}
prom_query() { # prom_query EXPR -> exit 0 when it parses and returns data
  python3 - "http://127.0.0.1:$prom_port" "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode({"query": sys.argv[2]})
answer = json.load(urllib.request.urlopen(url, timeout=5))
sys.exit(0 if answer.get("status") == "success" and answer["data"]["result"] else 1)
PY
}

await 30 "costmeter to be ready" curl -sf "http://127.0.0.1:$cm_port/readyz"
await 60 "Prometheus to scrape costmeter" prom_query 'up{job="costmeter"} == 1'
await 30 "Alertmanager to be ready" curl -sf "http://127.0.0.1:$am_port/-/ready"
say "stack up: costmeter :$cm_port, Prometheus :$prom_port, Alertmanager :$am_port, webhook :$hook_port"

# Data for every dashboard panel: runs, tasks, usage (one model without a price), lock waits.
post '[{"type":"run_start","run_id":"e2e-1","agent":"coder"},
       {"type":"task_start","task_id":"e2e-t1","run_id":"e2e-1","task_type":"build","agent":"coder"},
       {"type":"lock_wait","seconds":0.004,"lock":"registry"},
       {"type":"llm_usage","agent":"coder","model":"house-model","input_tokens":50,"output_tokens":5},
       {"type":"task_end","task_id":"e2e-t1","run_id":"e2e-1","task_type":"build","result":"failure","failure_class":"tool"},
       {"type":"run_end","run_id":"e2e-1","result":"failure","failure_class":"tool"}]'

post '{"type":"llm_usage","agent":"coder","model":"gpt-5","input_tokens":1000,"output_tokens":100,"cost_usd":0.95}'
await 60 "BudgetWarning at the webhook" notified BudgetWarning
say "BudgetWarning reached the webhook"
kill -0 "$victim" || fail "the target died before the budget was exceeded"

# While the budget warns and spend goes on, every panel has something to show.
# Every PromQL expression of the dashboards, with Grafana's variables filled in.
python3 - "$root/grafana/dashboards" > "$work/exprs.txt" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    dash = json.loads(path.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict) and q.get("query", "").startswith("label_values("):
            inner = q["query"][len("label_values("):-1]
            exprs.append(inner.rsplit(",", 1)[0].strip())
    for e in exprs:
        e = (e.replace("${ns}", "haios").replace("$__rate_interval", "1m").replace("$job", ".*")
              .replace("$agent", ".*").replace("$target", ".*"))
        print(e)
PY
count=0
while IFS= read -r expr; do
  await 60 "dashboard query to return data: $expr" prom_query "$expr"
  count=$((count + 1))
done < "$work/exprs.txt"
say "all $count dashboard expressions parse and return data"

post '{"type":"llm_usage","agent":"coder","model":"gpt-5","input_tokens":100,"output_tokens":10,"cost_usd":0.10}'
await 60 "BudgetExceeded at the webhook" notified BudgetExceeded
say "BudgetExceeded reached the webhook"
await 60 "the target to be soft-killed through /v1/alerts" sh -c "! kill -0 $victim"
grep -q '"alert '"'"'BudgetExceeded'"'"'"' "$work/costmeter.log" || grep -q "BudgetExceeded" "$work/costmeter.log" \
  || fail "costmeter's log does not show the Alertmanager order"
say "the target was soft-killed through Alertmanager and /v1/alerts"

say "ok"

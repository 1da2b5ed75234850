#!/usr/bin/env bash
# The proxy's cost, side by side in one run against one fast stand-in provider (OpenAI Chat
# Completions, examples/proxy_bench.rs): the stand-in called directly, through a bare hyper
# reverse proxy (reads nothing), through costmeter's proxy (meters every call), and through
# LiteLLM's proxy (PyPI, no database) when LITELLM names its `litellm` executable.
#
# Per path: added latency at one caller (p50, p99 minus direct's), calls/s at 32 callers, and
# the proxy process's CPU per call and RSS after the run; then time to first event on a slow
# stream (5 chunks 200 ms apart). `costmeter+adm` is costmeter with a hard USD budget covering
# the calls, so each is admitted on a reservation first. Last, 32 callers against a $1 hard
# budget until it is spent: what the provider billed beyond $1, admitted and refused calls.
# See BENCHMARKS.md, "The proxy".
#
#   benches/proxy_overhead.sh [SECONDS] [ROUNDS]
#   LITELLM=/path/to/venv/bin/litellm benches/proxy_overhead.sh 10 3
set -euo pipefail
seconds=${1:-10}
rounds=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin costmeter --example proxy_bench
bin="$here/target/release/costmeter"
bench="$here/target/release/examples/proxy_bench"

wait_port() { until curl -s -o /dev/null "http://127.0.0.1:$1/"; do sleep 0.1; done; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

"$bench" standin 127.0.0.1:19101 >/dev/null & pids+=($!)
"$bench" bare 127.0.0.1:19102 http://127.0.0.1:19101 >/dev/null & bare=$!; pids+=($bare)
cat > "$work/c.toml" <<TOML
[server]
listen = "127.0.0.1:19103"
[store]
path = "$work/costmeter.db"
[proxy]
enabled = true
[[proxy.upstream]]
name = "openai"
provider = "openai"
base_url = "http://127.0.0.1:19101"
TOML
COSTMETER_LOG=warn "$bin" run --config "$work/c.toml" 2>"$work/costmeter.log" & costmeter=$!; pids+=($costmeter)
budgeted() { # PORT LIMIT DIR
  mkdir -p "$3"
  sed -e "s/19103/$1/" -e "s#$work/costmeter.db#$3/costmeter.db#" "$work/c.toml" > "$3/c.toml"
  printf '[[budget]]\nname = "hard-usd"\nresource = "usd"\nlimit = %s\non_exceed = "soft_kill"\n' "$2" >> "$3/c.toml"
  COSTMETER_LOG=warn "$bin" run --config "$3/c.toml" 2>"$3/costmeter.log" &
}
budgeted 19105 1000000 "$work/adm"; admission=$!; pids+=($admission)
wait_port 19101; wait_port 19102; wait_port 19103; wait_port 19105

declare -A url=(
  [direct]="http://127.0.0.1:19101/v1/chat/completions"
  [bare]="http://127.0.0.1:19102/v1/chat/completions"
  [costmeter]="http://127.0.0.1:19103/proxy/openai/v1/chat/completions"
  [costmeter+adm]="http://127.0.0.1:19105/proxy/openai/v1/chat/completions"
)
declare -A pid=([bare]=$bare [costmeter]=$costmeter [costmeter+adm]=$admission)
paths=(direct bare costmeter costmeter+adm)
if [ -n "${LITELLM:-}" ]; then
  cat > "$work/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:19101/v1
      api_key: sk-bench
litellm_settings:
  telemetry: false
general_settings:
  master_key: sk-bench   # the key the load generator sends
YAML
  "$LITELLM" --config "$work/litellm.yaml" --port 19104 --num_workers 1 >"$work/litellm.log" 2>&1 & litellm=$!; pids+=($litellm)
  until curl -s -o /dev/null http://127.0.0.1:19104/health/liveliness; do
    kill -0 "$litellm" 2>/dev/null || { echo "LiteLLM did not start:"; tail -20 "$work/litellm.log"; exit 1; }
    sleep 0.5
  done
  url[litellm]="http://127.0.0.1:19104/v1/chat/completions"
  pid[litellm]=$litellm
  paths+=(litellm)
fi

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
hz=$(getconf CLK_TCK)
declare -A p50 p99 rate cpu
for path in "${paths[@]}"; do
  "$bench" load "${url[$path]}" 4 2 >/dev/null   # warm the pools
  for _ in $(seq "$rounds"); do
    one=$("$bench" load "${url[$path]}" 1 "$seconds")
    echo "$one" | field p50_ms >> "$work/$path.p50"
    echo "$one" | field p99_ms >> "$work/$path.p99"
    before=0
    [ -n "${pid[$path]:-}" ] && before=$(cpu_ticks "${pid[$path]}")
    many=$("$bench" load "${url[$path]}" 32 "$seconds")
    echo "$many" | field calls_per_s >> "$work/$path.rate"
    if [ -n "${pid[$path]:-}" ]; then
      after=$(cpu_ticks "${pid[$path]}")
      calls=$(echo "$many" | field calls)
      python3 -c "print(($after - $before) / $hz / max($calls, 1) * 1e6)" >> "$work/$path.cpu"
    fi
  done
  p50[$path]=$(median < "$work/$path.p50")
  p99[$path]=$(median < "$work/$path.p99")
  rate[$path]=$(median < "$work/$path.rate")
  cpu[$path]=$([ -f "$work/$path.cpu" ] && median < "$work/$path.cpu" || echo "-")
done

echo "median of $rounds rounds, ${seconds}s each; latency at 1 caller, calls/s at 32 callers"
printf "%-14s %9s %9s %11s %11s %10s %9s %9s %9s\n" path p50_ms p99_ms added_p50 added_p99 calls_s vs_bare cpu_us rss_mib
for path in "${paths[@]}"; do
  rss="-"
  [ -n "${pid[$path]:-}" ] && rss=$(python3 -c "print(f'{$(rss_kib "${pid[$path]}")/1024:.1f}')")
  python3 - "$path" "${p50[$path]}" "${p99[$path]}" "${p50[direct]}" "${p99[direct]}" "${rate[$path]}" "${rate[bare]}" "${cpu[$path]}" "$rss" <<'PY'
import sys
path, p50, p99, d50, d99, rate, bare, cpu, rss = sys.argv[1:]
p50, p99, d50, d99, rate, bare = map(float, (p50, p99, d50, d99, rate, bare))
cpu = "-" if cpu == "-" else f"{float(cpu):.0f}"
print(f"{path:<14} {p50:9.3f} {p99:9.3f} {p50 - d50:+11.3f} {p99 - d99:+11.3f} {rate:10.0f} {rate / bare:9.2f} {cpu:>9} {rss:>9}")
PY
done
echo
echo "time to first event, 5 chunks 200 ms apart (ms)"
for path in "${paths[@]}"; do
  for _ in $(seq "$rounds"); do
    "$bench" ttft "${url[$path]}" 200
  done > "$work/$path.ttft"
  first=$(python3 -c "
import json,statistics,sys
rows=[json.loads(l) for l in open('$work/$path.ttft')]
print(f\"{statistics.median(r['first_event_ms'] for r in rows):.1f} {statistics.median(r['last_event_ms'] for r in rows):.1f}\")")
  printf "%-14s first %s last %s\n" "$path" $first
done
echo
echo "calls metered by costmeter: $(curl -s http://127.0.0.1:19103/metrics | awk '/^haios_proxy_calls_total\{upstream="openai",outcome="ok"\}/ {print $2}')"

echo
budgeted 19106 1.0 "$work/one"; one=$!; pids+=($one)
wait_port 19106
before=$(curl -s http://127.0.0.1:19101/calls)
run=$("$bench" load http://127.0.0.1:19106/proxy/openai/v1/chat/completions 32 "$seconds")
after=$(curl -s http://127.0.0.1:19101/calls)
used=$(curl -s http://127.0.0.1:19106/v1/budgets | python3 -c "import json,sys; b=json.load(sys.stdin)['budgets'][0]; print(b['used'], b['reserved'])")
python3 - "$before" "$after" "$run" "$used" <<'PY'
import json, sys
before, after, run, used = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4].split()
per_call = (21 * 2.50 + 9 * 10.0) / 1e6   # the stand-in's usage, gpt-4o's baseline prices
billed = (after - before) * per_call
print(f"$1 hard budget, 32 callers, {sys.argv[3] and run['calls'] + run['refused']} calls sent: "
      f"{after - before} reached the provider (billed ${billed:.4f}, beyond $1: ${max(billed - 1, 0):.4f}), "
      f"{run['refused']} refused with 402, p99 of admitted {run['p99_ms']:.3f} ms; "
      f"costmeter's used ${float(used[0]):.4f}, reserved {used[1]}")
PY

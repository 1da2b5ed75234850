#!/usr/bin/env bash
# Durable ingestion throughput against a bare axum handler, in one run. See BENCHMARKS.md.
#
#   benches/ingest_throughput.sh [SECONDS=10] [ROUNDS=3]
#
# Needs wrk (apt-get install wrk). Both servers are release builds with 2 worker threads; wrk
# runs 2 threads and 32 keep-alive connections on the same 2-core machine.
set -euo pipefail
seconds=${1:-10}
rounds=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin costmeter --example bare_202
bin="$here/target/release/costmeter"
bare="$here/target/release/examples/bare_202"

rps() { awk '/^Requests\/sec:/ { print $2 }'; }

start_costmeter() {
  rm -f "$work"/costmeter.db*
  cat > "$work/c.toml" <<TOML
[server]
listen = "127.0.0.1:18000"
[store]
path = "$work/costmeter.db"
TOML
  COSTMETER_LOG=warn "$bin" run --config "$work/c.toml" 2>>"$work/cm.log" &
  cm=$!; pids+=("$cm")
  until curl -sf http://127.0.0.1:18000/readyz >/dev/null; do sleep 0.1; done
}

"$bare" 127.0.0.1:18100 & pids+=("$!")
until curl -s -o /dev/null -X POST -d x http://127.0.0.1:18100/v1/events; do sleep 0.1; done

results=()
for round in $(seq "$rounds"); do
  bare_rps=$(wrk -t2 -c32 -d"${seconds}s" -s "$here/benches/wrk/single_event.lua" http://127.0.0.1:18100 | rps)
  start_costmeter
  single_rps=$(wrk -t2 -c32 -d"${seconds}s" -s "$here/benches/wrk/single_event.lua" http://127.0.0.1:18000 | rps)
  stored=$(curl -s http://127.0.0.1:18000/metrics | awk '/^haios_events_total\{source="http",type="llm_usage",result="accepted"\}/ { print $2 }')
  batch_rps=$(wrk -t2 -c32 -d"${seconds}s" -s "$here/benches/wrk/ndjson_batch.lua" http://127.0.0.1:18000 | rps)
  kill "$cm"; wait "$cm" 2>/dev/null || true
  line=$(awk -v b="$bare_rps" -v s="$single_rps" -v n="$batch_rps" -v st="$stored" 'BEGIN {
    printf "bare_rps=%.0f single_rps=%.0f single_ratio=%.3f batch_rps=%.1f batch_events_per_s=%.0f single_events_stored=%s", b, s, s / b, n, n * 1000, st }')
  echo "round $round: $line"
  results+=("$line")
done
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
field() { for r in "${results[@]}"; do echo "$r" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; done | median; }
echo "median over $rounds rounds of ${seconds}s: bare_rps=$(field bare_rps) single_rps=$(field single_rps) single_ratio=$(field single_ratio) batch_events_per_s=$(field batch_events_per_s)"

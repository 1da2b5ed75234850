#!/usr/bin/env bash
# Spans per second received over OTLP/HTTP protobuf in batches of 512, against a bare axum
# handler that only reads the body, in one run. See BENCHMARKS.md.
#
#   benches/otlp_throughput.sh [SECONDS=10] [ROUNDS=3] [THREADS=4]
#
# Every span carries GenAI usage attributes and a fresh span id, so each becomes a stored,
# priced llm_usage event. Both servers are release builds with 2 worker threads; the load
# client (examples/otlp_load.rs) runs on the same 2-core machine.
set -euo pipefail
seconds=${1:-10}
rounds=${2:-3}
threads=${3:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin costmeter --example bare_202 --example otlp_load
bin="$here/target/release/costmeter"
bare="$here/target/release/examples/bare_202"
load="$here/target/release/examples/otlp_load"

start_costmeter() {
  rm -f "$work"/costmeter.db*
  cat > "$work/c.toml" <<TOML
[server]
listen = "127.0.0.1:18000"
max_body_bytes = 4194304
[store]
path = "$work/costmeter.db"
TOML
  COSTMETER_LOG=warn "$bin" run --config "$work/c.toml" 2>>"$work/cm.log" &
  cm=$!; pids+=("$cm")
  until curl -sf http://127.0.0.1:18000/readyz >/dev/null; do sleep 0.1; done
}

"$bare" 127.0.0.1:18100 & pids+=("$!")
until curl -s -o /dev/null -X POST -d x http://127.0.0.1:18100/v1/traces; do sleep 0.1; done

field_of() { tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }
results=()
for round in $(seq "$rounds"); do
  bare_sps=$("$load" http://127.0.0.1:18100/v1/traces "$seconds" "$threads" 512 | field_of spans_per_s)
  start_costmeter
  out=$("$load" http://127.0.0.1:18000/v1/traces "$seconds" "$threads" 512)
  sps=$(echo "$out" | field_of spans_per_s)
  sent=$(echo "$out" | field_of spans)
  stored=$(curl -s http://127.0.0.1:18000/metrics | awk '/^haios_events_total\{source="otlp",type="llm_usage",result="accepted"\}/ { print $2 }')
  kill "$cm"; wait "$cm" 2>/dev/null || true
  line=$(awk -v b="$bare_sps" -v s="$sps" -v sent="$sent" -v st="$stored" 'BEGIN {
    printf "bare_spans_per_s=%.0f spans_per_s=%.0f ratio=%.3f spans_sent=%s spans_stored=%s", b, s, s / b, sent, st }')
  echo "round $round: $line"
  results+=("$line")
done
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
field() { for r in "${results[@]}"; do echo "$r" | field_of "$1"; done | median; }
echo "median over $rounds rounds of ${seconds}s: bare_spans_per_s=$(field bare_spans_per_s) spans_per_s=$(field spans_per_s) ratio=$(field ratio)"

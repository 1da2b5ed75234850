#!/usr/bin/env bash
# Writes link/symbol-order.txt: the functions a running sidecar executes, in the order it first
# runs them, for the linker to place side by side (see build.rs and BENCHMARKS.md, "Footprint").
#
#   benches/symbol_order.sh [OUT=link/symbol-order.txt]
#
# It builds the release binary with its symbols kept (RUSTFLAGS changes no symbol name; a
# profile setting would), runs it under callgrind four times and lists every function of the binary
# that ran:
#   1. metering: start-up on a config with one target, sampling a 20-process tree (with a child
#      that comes and goes) every second, /metrics, /healthz and /readyz scraped — what every
#      sidecar does all day — once on a new store and once restarted over it;
#   2. serving: the same plus JSON events, OTLP/HTTP usage, /v1/status, /v1/report, /v1/budgets,
#      /v1/runs and the page, then a restart over the store those filled — listed after the
#      first set, so that a daemon which only meters faults in the first block alone.
# Rerun it after a dependency or toolchain upgrade (a stale list costs memory, not correctness)
# and commit the file it writes. Needs: cargo, valgrind, curl, binutils (nm).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
tree=""
cleanup() {
  [ -n "$tree" ] && { kill -9 -- "-$tree"; wait "$tree"; } 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
for tool in valgrind nm curl; do
  command -v "$tool" >/dev/null || { echo "$tool missing" >&2; exit 1; }
done

export CARGO_TARGET_DIR="$here/target/symbol-order"
RUSTFLAGS="-C strip=none" cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin costmeter
bin="$CARGO_TARGET_DIR/release/costmeter"
port=18301
base="http://127.0.0.1:$port"

setsid sh -c 'for i in $(seq 18); do sleep 3600 & done;
  while :; do timeout 0.1 sh -c "while :; do :; done"; sleep 0.4; done & wait' &
tree=$!
until [ "$(pgrep -c -g "$tree")" -ge 20 ]; do sleep 0.1; done

# One callgrind run: $1 names it, $2 is a function that drives the daemon once it is ready, $3
# the store (a directory, shared by runs that restart over it).
profile() {
  local name=$1 drive=$2 store=$3
  mkdir -p "$work/$name" "$work/$store"
  cat > "$work/$name/c.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
[store]
path = "$work/$store/costmeter.db"
[[target]]
name = "tree"
pid = $tree
children = true
sample_interval = "1s"
EOF
  COSTMETER_LOG=warn valgrind --tool=callgrind --demangle=no --compress-strings=no \
    --compress-pos=no --callgrind-out-file="$work/$name/cg.%p" \
    "$bin" run --config "$work/$name/c.toml" 2>"$work/$name/log" &
  local pid=$!
  until curl -sf "$base/readyz" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name/log" >&2; exit 1; }
    sleep 0.5
  done
  "$drive"
  kill -TERM "$pid"
  wait "$pid" || true
  # Every function name callgrind saw, in the order it first saw them.
  grep -h -E '^c?fn=' "$work/$name"/cg.* | sed -E 's/^c?fn=(\([0-9]+\) )?//' \
    | awk '!seen[$0]++' > "$work/$name/ran"
}

meter() {
  for _ in $(seq 15); do
    curl -sf -o /dev/null "$base/metrics"
    curl -sf -o /dev/null -H 'Accept: application/openmetrics-text' "$base/metrics"
    curl -sf -o /dev/null "$base/healthz"
    curl -sf -o /dev/null "$base/readyz"
    sleep 1
  done
}

serve() {
  meter
  for i in $(seq 5); do
    curl -sf -o /dev/null "$base/v1/events" -H 'Content-Type: application/json' -d '{
      "type": "llm_usage", "event_id": "order-'"$i"'", "agent": "coder", "model": "claude-sonnet-4-5",
      "input_tokens": 1000, "cache_read_tokens": 600, "output_tokens": 100}'
    printf '%s\n' \
      '{"type":"run_start","run_id":"r'"$i"'","agent":"coder"}' \
      '{"type":"task_start","task_id":"t'"$i"'","task_type":"edit","run_id":"r'"$i"'"}' \
      '{"type":"file_write","bytes":10,"task_id":"t'"$i"'","path":"a.rs"}' \
      '{"type":"task_end","task_id":"t'"$i"'","task_type":"edit","result":"success"}' \
      '{"type":"run_end","run_id":"r'"$i"'","result":"success"}' \
      | curl -sf -o /dev/null "$base/v1/events" -H 'Content-Type: application/x-ndjson' --data-binary @-
    # Span times must lie within the store's retention, or the span is refused (200 with
    # partialSuccess) and the path that stores it never runs.
    local end_ns; end_ns=$(date +%s%N)
    otlp=$(curl -sf "$base/v1/otlp/v1/traces" -H 'Content-Type: application/json' -d '{
      "resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "coder"}}]},
        "scopeSpans": [{"spans": [{"traceId": "5b8efff798038103d269b633813fc60'"$i"'", "spanId": "eee19b7ec3c1b17'"$i"'",
          "name": "chat", "kind": 3, "startTimeUnixNano": "'"$((end_ns - 1000000000))"'", "endTimeUnixNano": "'"$end_ns"'",
          "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "100"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "10"}}]}]}]}]}')
    case $otlp in *rejected*) echo "the span was refused: $otlp" >&2; exit 1 ;; esac
    for path in /v1/status /v1/report '/v1/report?format=md' /v1/budgets /v1/budgets/check \
      /v1/runs /v1/pricing/status /; do
      curl -sf -o /dev/null "$base$path"
    done
  done
}

profile metering meter metering-store
profile metering-restart meter metering-store
profile serving serve serving-store
profile serving-restart meter serving-store

nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u > "$work/defined"
# The binary's own functions that ran, metering first, each name once.
keep() { cat "$@" | awk 'NR == FNR { ok[$0] = 1; next } ok[$0] && !seen[$0]++' "$work/defined" -; }
out=$(realpath -m "${1:-$here/link/symbol-order.txt}")
if [ -s "$out" ]; then
  echo "the old list: $(awk 'NR == FNR { ok[$0] = 1; next } !ok[$0]' "$work/defined" "$out" | wc -l) of $(wc -l < "$out") names no longer in the binary"
fi
keep "$work"/metering/ran "$work"/metering-restart/ran > "$work/first"
keep "$work"/{metering,metering-restart,serving,serving-restart}/ran > "$out"
echo "$(wc -l < "$work/first") metering + $(( $(wc -l < "$out") - $(wc -l < "$work/first") )) serving functions written to $out"

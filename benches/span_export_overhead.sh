#!/usr/bin/env bash
# Ingestion of span-making events with span export off, and with it on towards a collector that
# is down (nothing listens on the port). Same run, 3 rounds each; see BENCHMARKS.md.
#
#   benches/span_export_overhead.sh [SECONDS=5] [ROUNDS=3]
set -euo pipefail
seconds=${1:-5}
rounds=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'pkill -f "costmeter run --config $work" 2>/dev/null || true; rm -rf "$work"' EXIT
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin costmeter
for variant in off collector-down; do
  for round in $(seq "$rounds"); do
    rm -f "$work"/c.db*
    printf '[server]\nlisten = "127.0.0.1:18000"\n[store]\npath = "%s/c.db"\n' "$work" > "$work/c.toml"
    if [ "$variant" = collector-down ]; then printf '[telemetry]\notlp_endpoint = "http://127.0.0.1:1"\n' >> "$work/c.toml"; fi
    COSTMETER_LOG=error "$here/target/release/costmeter" run --config "$work/c.toml" 2>/dev/null &
    pid=$!
    until curl -s -o /dev/null http://127.0.0.1:18000/healthz; do sleep 0.1; done
    rps=$(wrk -t2 -c32 -d"${seconds}s" -s "$here/benches/wrk/file_write.lua" http://127.0.0.1:18000 | awk '/^Requests\/sec:/ { print $2 }')
    echo "$variant round $round: file_write events/s = $rps"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done

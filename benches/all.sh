#!/usr/bin/env bash
# Every benchmark in BENCHMARKS.md, against the current release binary, one after another, each
# printing its figures beside its baseline and the ratio. BENCHMARKS.md's figures are copied
# from this script's output, with the date and commit it prints first.
#
#   benches/all.sh [--quick]
#
# --quick runs each with fewer rounds (a smoke run; do not copy its figures).
# Needs: curl, python3, wrk, prometheus-process-exporter (apt-get install wrk
# prometheus-process-exporter).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
quick=${1:-}
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)'), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
cargo build --release --quiet --bin costmeter --examples || exit 1
failed=()
run() {
  local name=$1; shift
  echo
  echo "== $name: $*"
  "$@" || failed+=("$name")
}
if [ "$quick" = "--quick" ]; then
  run footprint benches/footprint.sh
  run metrics_render target/release/examples/render_10k 50
  run sampler_overhead benches/sampler_overhead.sh 10 1
  run ingest_throughput benches/ingest_throughput.sh 3 1
  run otlp_throughput benches/otlp_throughput.sh 3 1
  run span_export_overhead benches/span_export_overhead.sh 2 1
  run reads_beside_writes benches/reads_beside_writes.py --events 50000
  run kill_latency python3 benches/kill_latency.py 20
else
  run footprint benches/footprint.sh
  run metrics_render target/release/examples/render_10k 200
  run sampler_overhead benches/sampler_overhead.sh 60 3
  run ingest_throughput benches/ingest_throughput.sh 10 3
  run otlp_throughput benches/otlp_throughput.sh 10 3
  run span_export_overhead benches/span_export_overhead.sh 5 3
  run reads_beside_writes benches/reads_beside_writes.py --events 500000
  run kill_latency python3 benches/kill_latency.py 200
fi
echo
if [ ${#failed[@]} -gt 0 ]; then echo "failed: ${failed[*]}"; exit 1; fi
echo "all benchmarks ran"

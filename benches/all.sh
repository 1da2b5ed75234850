#!/usr/bin/env bash
# Every benchmark in BENCHMARKS.md, against the current release binary, one after another, each
# printing its figures beside its baseline and the ratio. BENCHMARKS.md's figures are copied
# from this script's output, with the date and commit it prints first.
#
#   benches/all.sh [--quick]
#
# --quick runs each with fewer rounds (a smoke run; do not copy its figures).
# Needs: curl, python3, wrk, prometheus-process-exporter, redis-server (apt-get install wrk
# prometheus-process-exporter redis-server); LITELLM=/path/to/litellm for the proxy's peer.
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
# Full runs, or short ones with --quick: render rounds, sampler s/rounds, ingest s/rounds, OTLP
# s/rounds, span export s/rounds, events in the busy store, kill tries, proxy s/rounds.
if [ "$quick" = "--quick" ]; then
  set -- 50 10 1 3 1 3 1 2 1 50000 20 2 1
else
  set -- 200 60 3 10 3 10 3 5 3 500000 200 10 3
fi
run footprint benches/footprint.sh
run metrics_render target/release/examples/render_10k "$1"
run sampler_overhead benches/sampler_overhead.sh "$2" "$3"
run ingest_throughput benches/ingest_throughput.sh "$4" "$5"
run otlp_throughput benches/otlp_throughput.sh "$6" "$7"
run span_export_overhead benches/span_export_overhead.sh "$8" "$9"
run reads_beside_writes benches/reads_beside_writes.py --events "${10}"
run kill_latency python3 benches/kill_latency.py "${11}"
run statusline python3 benches/statusline.py "$([ "$quick" = "--quick" ] && echo 30 || echo 300)"
# LiteLLM beside it when LITELLM names its executable (pip install 'litellm[proxy]').
run proxy_overhead benches/proxy_overhead.sh "${12}" "${13}"
# Fleet budgets on Redis: admission latency, overshoot and crossing to stop (redis-server).
run fleet_redis python3 benches/fleet_redis.py "${12}" "${13}" "$([ "$quick" = "--quick" ] && echo 3 || echo 20)"
# Not run here (five minutes of mostly waiting on Prometheus's intervals):
#   python3 benches/fleet_alert_latency.py 10
echo
if [ ${#failed[@]} -gt 0 ]; then echo "failed: ${failed[*]}"; exit 1; fi
echo "all benchmarks ran"

#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, two at a time, from the seed corpora, and fails if any
# target crashed. cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take
# them. Crashes land in fuzz/artifacts/<target>/ and become regression tests
# (tests/fuzz_regressions.rs).
#   fuzz/run.sh [SECONDS=600]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build -O
mkdir -p logs

run() {
  local target=$1 status=0
  mkdir -p "corpus/$target"
  cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"logs/$target.log" 2>&1 || status=$?
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec)|^Done|^SUMMARY|ERROR" "logs/$target.log" |
    sed "s/^/$target: /" || true
  return "$status"
}

targets=(event_parser ndjson_splitter config_loader otlp_decoders alertmanager_payload)
failed=()
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  run "${targets[i]}" & pids+=("$!")
  if [ -n "${targets[i + 1]:-}" ]; then run "${targets[i + 1]}" & pids+=("$!"); fi
  for ((j = 0; j < ${#pids[@]}; j++)); do
    wait "${pids[j]}" || failed+=("${targets[i + j]}")
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}; see fuzz/logs/ and fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, no crash"

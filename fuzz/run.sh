#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, two at a time, from the seed corpora.
#   fuzz/run.sh [SECONDS=600]
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
# Crashes land in fuzz/artifacts/<target>/ and become regression tests (tests/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo fuzz build -O
run() {
  local target=$1
  mkdir -p "corpus/$target"
  cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tee "logs/$target.log" |
    grep -E "^(stat::|==|SUMMARY|Done)" || true
}
mkdir -p logs
targets=(event_parser ndjson_splitter config_loader otlp_decoders alertmanager_payload)
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  run "${targets[i]}" &
  [ -n "${targets[i+1]:-}" ] && run "${targets[i+1]}" &
  wait
done

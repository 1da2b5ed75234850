#!/usr/bin/env bash
# costmeter's own CPU and RSS while it meters a 100-process tree at a 1 s interval, beside
# prometheus-process-exporter (Debian) watching the same tree, both scraped every second, in one
# run. Prints one line per round and the medians; see BENCHMARKS.md. The rounds share one store:
# the first starts on a new one, the others restart over it, as a sidecar does.
#
#   benches/sampler_overhead.sh [SECONDS_PER_ROUND=60] [ROUNDS=3]
#
# Needs: cargo, curl, prometheus-process-exporter (apt-get install prometheus-process-exporter).
set -euo pipefail
seconds=${1:-60}
rounds=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 -- "-$p" "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

command -v prometheus-process-exporter >/dev/null || {
  echo "prometheus-process-exporter missing: apt-get install prometheus-process-exporter" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
bin="$here/target/release/costmeter"
hz=$(getconf CLK_TCK)

cpu_seconds() { awk -v hz="$hz" '{ sub(/.*\) /, ""); split($0, f, " "); print (f[12] + f[13]) / hz }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }
anon_kib() { awk '/^RssAnon/ { print $2 }' "/proc/$1/status"; }

results=()
for round in $(seq "$rounds"); do
  # The tree: a shell with 99 children, one of them busy 10 % of the time, and a marker the
  # process-exporter config matches on.
  setsid sh -c 'marker=costmeter-bench-tree; for i in $(seq 98); do sleep 3600 & done;
    while :; do timeout 0.1 sh -c "while :; do :; done"; sleep 0.9; done & wait' &
  tree=$!
  pids+=("$tree")
  until [ "$(pgrep -c -g "$tree")" -ge 100 ]; do sleep 0.1; done

  cat > "$work/costmeter.toml" <<EOF
[server]
listen = "127.0.0.1:18000"
[store]
path = "$work/costmeter.db"
[[target]]
name = "tree"
pid = $tree
children = true
sample_interval = "1s"
EOF
  cat > "$work/pe.yml" <<EOF
process_names:
  - name: tree
    cmdline: ['costmeter-bench-tree']
EOF
  COSTMETER_LOG=warn "$bin" run --config "$work/costmeter.toml" 2>"$work/cm.log" &
  cm=$!; pids+=("$cm")
  prometheus-process-exporter -web.listen-address 127.0.0.1:19256 -config.path "$work/pe.yml" \
    -gather-smaps=false -threads=false >"$work/pe.log" 2>&1 &
  pe=$!; pids+=("$pe")
  until curl -sf http://127.0.0.1:18000/readyz >/dev/null && curl -sf http://127.0.0.1:19256/metrics >/dev/null; do sleep 0.1; done

  cm0=$(cpu_seconds "$cm"); pe0=$(cpu_seconds "$pe")
  cm_rss_max=0; pe_rss_max=0
  for _ in $(seq "$seconds"); do
    curl -sf -o /dev/null http://127.0.0.1:18000/metrics
    curl -sf -o /dev/null http://127.0.0.1:19256/metrics
    sleep 1
  done
  cm1=$(cpu_seconds "$cm"); pe1=$(cpu_seconds "$pe")
  cm_rss=$(rss_kib "$cm"); pe_rss=$(rss_kib "$pe")
  cm_hwm=$(hwm_kib "$cm"); pe_hwm=$(hwm_kib "$pe")
  cm_anon=$(anon_kib "$cm"); pe_anon=$(anon_kib "$pe")
  procs=$(curl -sf http://127.0.0.1:18000/metrics | awk '/^haios_target_processes\{target="tree"\}/ { print $2 }')
  pe_procs=$(curl -sf http://127.0.0.1:19256/metrics | awk '/^namedprocess_namegroup_num_procs\{groupname="tree"\}/ { print $2 }')
  line=$(awk -v a="$cm0" -v b="$cm1" -v c="$pe0" -v d="$pe1" -v r="$cm_rss" -v s="$pe_rss" \
    -v h="$cm_hwm" -v k="$pe_hwm" -v n="$procs" -v m="$pe_procs" -v x="$cm_anon" -v y="$pe_anon" 'BEGIN {
      cm = b - a; pe = d - c;
      printf "costmeter_cpu_s=%.3f exporter_cpu_s=%.3f cpu_ratio=%.3f costmeter_rss_kib=%d exporter_rss_kib=%d rss_ratio=%.3f costmeter_anon_kib=%d exporter_anon_kib=%d anon_ratio=%.3f costmeter_hwm_kib=%d exporter_hwm_kib=%d processes=%s exporter_processes=%s",
        cm, pe, (pe > 0 ? cm / pe : 0), r, s, r / s, x, y, x / y, h, k, n, m }')
  echo "round $round: $line"
  results+=("$line")
  kill "$cm" "$pe"; kill -9 -- "-$tree" 2>/dev/null || true
  wait "$cm" "$pe" 2>/dev/null || true
  pids=()
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
field() { for r in "${results[@]}"; do echo "$r" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; done | median; }
echo "median over $rounds rounds of ${seconds}s: costmeter_cpu_s=$(field costmeter_cpu_s) exporter_cpu_s=$(field exporter_cpu_s) cpu_ratio=$(field cpu_ratio) costmeter_rss_kib=$(field costmeter_rss_kib) exporter_rss_kib=$(field exporter_rss_kib) rss_ratio=$(field rss_ratio) costmeter_anon_kib=$(field costmeter_anon_kib) exporter_anon_kib=$(field exporter_anon_kib) anon_ratio=$(field anon_ratio)"

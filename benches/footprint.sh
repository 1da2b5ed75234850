#!/usr/bin/env bash
# The release binary's size, and the daemon's memory idle on built-in defaults after start,
# after 60 scrapes of /metrics and after a restart over the same store: RSS split into
# file-backed pages (the binary) and anonymous memory (heap, stacks). See BENCHMARKS.md,
# "Footprint".
#
#   benches/footprint.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pid=""
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin costmeter
bin="$here/target/release/costmeter"
cat > "$work/c.toml" <<TOML
[server]
listen = "127.0.0.1:18300"
[store]
path = "$work/costmeter.db"
TOML
start() {
  COSTMETER_LOG=warn "$bin" run --config "$work/c.toml" 2>"$work/log" &
  pid=$!
  until curl -sf http://127.0.0.1:18300/readyz >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "costmeter exited before it was ready:" >&2; cat "$work/log" >&2; exit 1; }
    sleep 0.1
  done
}
mem() { awk '/^(VmRSS|RssAnon|RssFile)/ { printf "%s=%d ", $1, $2 }' "/proc/$pid/status" | tr -d ':'; }
echo "binary_bytes=$(stat -c %s "$bin")"
start
sleep 2
echo "idle: $(mem)(kB)"
for _ in $(seq 60); do curl -s http://127.0.0.1:18300/metrics >/dev/null; done
sleep 1
echo "after 60 scrapes: $(mem)(kB)"
# A sidecar is restarted over its store: that start reads what the first one wrote.
kill "$pid"; wait "$pid" || true
start
sleep 2
echo "idle after a restart over the store: $(mem)(kB)"

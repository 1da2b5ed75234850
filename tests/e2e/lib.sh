# Shared by the end-to-end scripts: sourced after `set -euo pipefail` with `name` set to what
# the script prints before its messages. Gives root, bin (the costmeter binary, $1 or the debug
# build), work (a scratch folder removed at exit unless KEEP is set), pids (killed at exit),
# say, fail (prints the tail of every log in work), free_port and await.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$(realpath "${1:-$root/target/debug/costmeter}")
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "$name: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
say() { echo "$name: $*"; }
fail() { echo "$name: FAILED: $*" >&2; for f in "$work"/*.log; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
await() { # await SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" > /dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || fail "timed out after ${limit}s waiting for $what"
    sleep 0.2
  done
}

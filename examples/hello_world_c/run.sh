#!/usr/bin/env bash
# `make run`: serves the C hello-world pipeline on the embedded control
# plane, sends it one request, and keeps serving until Ctrl-C.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/${BUILD:-build}/examples/hello_world_c/hello_world"
dynamo=$(command -v dynamo || echo "$root/${BUILD:-build}/dynamo")
tmp=$(mktemp -d)
export DYN_CONTROL_SOCKET="$tmp/control.sock"
pids=()
cleanup() {
  # Workers first (they drain and deregister), the control plane last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

"$dynamo" control --socket "$DYN_CONTROL_SOCKET" & pids+=($!)
for _ in $(seq 50); do [ -S "$DYN_CONTROL_SOCKET" ] && break; sleep 0.1; done
"$bin" backend | sed -u 's/^/[Backend] /' & pids+=($!)
"$bin" middle | sed -u 's/^/[Middle] /' & pids+=($!)
sleep 0.3
echo '$ hello_world client "hello world"'
"$bin" client "hello world"
echo
echo "Serving hello/middle/generate. In another shell:"
echo "  DYN_CONTROL_SOCKET=$DYN_CONTROL_SOCKET $bin client 'your text'"
echo "Press Ctrl-C to stop."
wait

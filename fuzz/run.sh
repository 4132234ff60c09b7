#!/usr/bin/env bash
# Runs each fuzz target for a bounded time from its seed corpus.
# usage: fuzz/run.sh BUILD_DIR SECONDS
set -euo pipefail
build=$1
secs=${2:-20}
here=$(cd "$(dirname "$0")" && pwd)
for t in frame control http kv_events tokenizer gguf; do
  work=$(mktemp -d)
  cp -r "$here/corpus/$t/." "$work/" 2>/dev/null || true
  echo "fuzz: $t for ${secs}s"
  "$build/fuzz_$t" -max_total_time="$secs" -max_len=4096 -print_final_stats=0 \
    "$work" 2>"$work.log" || { tail -40 "$work.log"; echo "fuzz: $t FAILED"; exit 1; }
  grep -E "^#[0-9]+.*(DONE|pulse)" "$work.log" | tail -1 || true
  rm -rf "$work" "$work.log"
done
echo "fuzz: no crashes"

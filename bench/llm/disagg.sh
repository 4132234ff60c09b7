#!/usr/bin/env bash
# bench/llm/disagg.sh [BUILD_DIR] - disaggregated prefill/decode
# (`make bench-disagg`):
#
#  1. KV transfer: examples/llm/graphs/disagg.py with simulated engines
#     whose blocks stand for KV_BLOCK_BYTES each and whose prefill is sped
#     up to nothing, so a long prompt's time goes to moving its KV; the
#     bytes the PrefillWorker sent over the decode Worker's
#     dynamo_disagg_kv_receive_seconds (KV header -> last byte), and over
#     the sending and end-to-end seconds too, from their /metrics, against
#     a Python sender/receiver moving the same bytes over 127.0.0.1 TCP in
#     the same run (kv_transfer.py, five rounds);
#  2. long prompts mixed into steady decoding (disagg_load.py, same seed):
#     agg.py with 2 simulated workers vs disagg.py with 1 decode Worker +
#     1 PrefillWorker, the engines' default timings, for each
#     max-num-batched-tokens in BATCHED (the engines' chunked-prefill step
#     budget, the same on every worker; "unchunked" is 65536, more than any
#     prompt, so a prompt is prefilled whole in one step);
#  3. with LLAMA=1, the same on llama.cpp (agg_llama.yaml with 2 workers
#     vs disagg_llama.yaml), the workload scaled to the model.
#
# Prints markdown tables; writes them to bench/results/llm-disagg.md and
# the servers' logs to bench/results/llm-logs/ (git-ignored).
#
# Knobs (environment): DURATION=30 STREAMS=8 INTERVAL=0.5 SEED=42
#   BATCHED="512 2048 unchunked" PORT=18760 (health ports PORT+10..)
#   KV_BLOCK_BYTES=262144 TRANSFERS=8 LLAMA= LLAMA_DURATION=30
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$(cd "${1:-$repo/build}" && pwd)"
DURATION="${DURATION:-30}" STREAMS="${STREAMS:-8}" INTERVAL="${INTERVAL:-0.5}"
SEED="${SEED:-42}" PORT="${PORT:-18760}" KV_BLOCK_BYTES="${KV_BLOCK_BYTES:-262144}"
TRANSFERS="${TRANSFERS:-8}" LLAMA="${LLAMA:-}" LLAMA_DURATION="${LLAMA_DURATION:-30}"
BATCHED="${BATCHED:-512 2048 unchunked}"
HEALTH=$((PORT + 10))
results="$repo/bench/results"
logs="$results/llm-logs"
mkdir -p "$logs"
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"
graphs="$repo/examples/llm/graphs" configs="$repo/examples/llm/configs"

serve_pid=""
stop_graph() {
  [[ -z "$serve_pid" ]] && return
  kill -TERM -- "-$serve_pid" 2>/dev/null
  for _ in $(seq 100); do kill -0 -- "-$serve_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$serve_pid" 2>/dev/null
  serve_pid=""
}
trap 'stop_graph; exit 130' INT TERM
trap stop_graph EXIT

# serve NAME GRAPH CONFIG WORKERS ARGS...: starts the graph and waits until
# WORKERS engine workers (Worker and PrefillWorker) are ready and the
# Frontend answers.
serve() {
  local name=$1 graph=$2 config=$3 workers=$4
  shift 4
  setsid "$build/dynamo" serve "$graphs/$graph.py:Frontend" -f "$configs/$config.yaml" \
    --Frontend.port="$PORT" --health-port "$HEALTH" "$@" >"$logs/disagg-$name.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 900); do
    if [[ "$(grep -c 'Worker ready' "$logs/disagg-$name.log")" -ge "$workers" ]] &&
       curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "disagg: $name did not become healthy; see $logs/disagg-$name.log" >&2
  return 1
}

# prefill_counts NAME: whether the decode worker sent every long prompt
# away or kept some (a short uncached part, or the prefill queue full).
prefill_counts() {
  for p in $(seq "$HEALTH" $((HEALTH + 4))); do curl -s "http://127.0.0.1:$p/metrics"; done |
    awk -v name="$1" '/^dynamo_disagg_(remote|local)_prefills_total\{.*component="Worker"/ {
           sub(/^dynamo_disagg_/, "", $1); sub(/_total.*/, "", $1); n[$1] += $2 }
         END { printf "- %s: the decode worker prefilled %d prompts remotely, %d locally\n",
                      name, n["remote_prefills"], n["local_prefills"] }' >>"$results/llm-disagg-prefills.txt"
}

status=0
out="$results/llm-disagg.md"
: >"$out"
rm -f "$results/llm-disagg-prefills.txt"

echo "== 1. KV transfer, PrefillWorker -> decode Worker, vs loopback TCP"
fast=(--Worker.kv-bytes-per-block="$KV_BLOCK_BYTES" --PrefillWorker.kv-bytes-per-block="$KV_BLOCK_BYTES"
      --PrefillWorker.speedup=1000 --Worker.speedup=1000 --PrefillWorker.kv-bandwidth-mbps=0
      --Worker.num-blocks=2048 --PrefillWorker.num-blocks=2048)
if serve transfer disagg disagg 2 "${fast[@]}"; then
  python3 "$here/kv_transfer.py" --port "$PORT" --health "$HEALTH" --transfers "$TRANSFERS" \
    --seed "$SEED" --block-bytes "$KV_BLOCK_BYTES" | tee -a "$out" || status=1
else
  status=1
fi
stop_graph

echo "== 2. Long prompts into steady decoding: 2 aggregated workers vs 1 decode + 1 prefill"
load=(--duration "$DURATION" --streams "$STREAMS" --interval "$INTERVAL" --seed "$SEED")
raw=()
for batched in $BATCHED; do
  tokens=$batched
  [[ $batched == unchunked ]] && tokens=65536
  for mode in agg disagg; do
    name="sim-$mode-$batched"
    if [[ $mode == agg ]]; then
      serve "$name" agg agg 2 --Worker.ServiceArgs.workers=2 --Worker.num-blocks=4096 \
        --Worker.max-num-batched-tokens="$tokens" || { status=1; continue; }
    else
      serve "$name" disagg disagg 2 --Worker.num-blocks=4096 --PrefillWorker.num-blocks=4096 \
        --Worker.max-num-batched-tokens="$tokens" \
        --PrefillWorker.max-num-batched-tokens="$tokens" || { status=1; continue; }
    fi
    line=$(python3 "$here/disagg_load.py" --port "$PORT" --name "$name" "${load[@]}" \
             2>>"$logs/disagg-load-$name.log" | grep '^RESULT')
    echo "$line"
    raw+=("$line")
    [[ $mode == disagg ]] && prefill_counts "$name"
    stop_graph
  done
done

if [[ -n "$LLAMA" ]]; then
  echo "== 3. The same on llama.cpp (smollm2-135m): 2 aggregated workers vs 1 decode + 1 prefill"
  # Scaled to a 135M model on two shared cores: 300-500-word long prompts
  # (300-500 tokens, over max-local-prefill-length) every 3 s into 2
  # streams of 48 tokens. One thread per engine in both graphs, as the
  # default (the CPUs / the engine workers on the machine) gives on two
  # cores; explicit so that a bigger machine measures the same.
  lload=(--duration "$LLAMA_DURATION" --streams 2 --interval 3 --seed "$SEED" --model smollm2-135m
         --max-tokens 48 --long-min 300 --long-max 500 --long-tokens 8)
  for mode in agg disagg; do
    if [[ $mode == agg ]]; then
      serve llama-agg agg agg_llama 2 --Worker.ServiceArgs.workers=2 --Worker.threads=1 ||
        { status=1; continue; }
    else
      serve llama-disagg disagg disagg_llama 2 --Worker.threads=1 --PrefillWorker.threads=1 ||
        { status=1; continue; }
    fi
    line=$(python3 "$here/disagg_load.py" --port "$PORT" --name "llama-$mode" "${lload[@]}" \
             2>>"$logs/disagg-load-llama-$mode.log" | grep '^RESULT')
    echo "$line"
    raw+=("$line")
    [[ $mode == disagg ]] && prefill_counts llama-disagg
    stop_graph
  done
fi

printf '%s\n' "${raw[@]}" >"$results/llm-disagg-raw.txt"
python3 - "$results/llm-disagg-raw.txt" "$DURATION" "$STREAMS" "$INTERVAL" "$SEED" <<'EOF' | tee -a "$out"
import sys
path, duration, streams, interval, seed = sys.argv[1:]
rows = {}
for line in open(path):
    if line.startswith("RESULT"):
        kv = dict(f.split("=", 1) for f in line.split()[1:])
        rows[kv["name"]] = kv
f = lambda r, k: float(r[k])
print(f"\n{streams} steady streams (short prompts, 200 tokens each, closed loop) and a long prompt "
      f"every {interval} s for {duration} s, seed {seed}\n")
print("| run | requests (long) | errors | long prompt tokens | TTFT p50 / p90 | long TTFT p50 / p90 "
      "| ITL p50 / p90 / p99 | TPOT p50 / p90 | output tokens/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows.values():
    print(f"| {r['name']} | {r['requests']} ({r['long']}) | {r['errors']} | "
          f"{r['long_prompt_tokens_min']}–{r['long_prompt_tokens_max']} | "
          f"{f(r, 'ttft_p50_ms'):.0f} / {f(r, 'ttft_p90_ms'):.0f} ms | "
          f"{f(r, 'long_ttft_p50_ms'):.0f} / {f(r, 'long_ttft_p90_ms'):.0f} ms | "
          f"{f(r, 'itl_p50_ms'):.1f} / {f(r, 'itl_p90_ms'):.1f} / {f(r, 'itl_p99_ms'):.1f} ms | "
          f"{f(r, 'tpot_p50_ms'):.1f} / {f(r, 'tpot_p90_ms'):.1f} ms | {f(r, 'tokens_per_s'):.0f} |")
print()
# Each aggregated run against the disaggregated one of the same engine and
# max-num-batched-tokens ("sim-agg-512" with "sim-disagg-512").
for name, a in rows.items():
    d = rows.get(name.replace("-agg", "-disagg", 1))
    if "-agg" not in name or not d:
        continue
    itl90, tps = f(a, 'itl_p90_ms') / f(d, 'itl_p90_ms'), f(d, 'tokens_per_s') / f(a, 'tokens_per_s')
    met = "met" if itl90 >= 2 and tps >= 1 else "NOT met"
    print(f"- {name.replace('-agg', '', 1)}: ITL p90 agg / disagg {itl90:.2f}x, "
          f"ITL p99 {f(a, 'itl_p99_ms') / f(d, 'itl_p99_ms'):.2f}x, "
          f"TPOT p90 {f(a, 'tpot_p90_ms') / f(d, 'tpot_p90_ms'):.2f}x, "
          f"TTFT p90 {f(a, 'ttft_p90_ms') / f(d, 'ttft_p90_ms'):.2f}x, "
          f"long TTFT p50 {f(a, 'long_ttft_p50_ms') / f(d, 'long_ttft_p50_ms'):.2f}x, "
          f"output tokens/s disagg / agg {tps:.2f}x; "
          f"target (ITL p90 >= 2x lower at no less throughput) {met}")
EOF
cat "$results/llm-disagg-prefills.txt" 2>/dev/null | tee -a "$out"
exit $status

#!/usr/bin/env bash
# bench/llm/routing.sh [BUILD_DIR] - KV-aware routing end to end.
#
# Serves examples/llm/graphs/agg_router.py with WORKERS simulated engines and
# runs the same prefix-heavy, multi-turn chat workload (prefix_load.py, same
# seed) once per Router mode: kv, round-robin, random. Between modes the
# graph is stopped and started again, so every mode starts with cold caches.
# Prints a markdown table (mean and p90 time to first token, throughput,
# the share of prompt tokens served from the engines' prefix caches) and the
# ratio of round-robin's and random's mean TTFT to kv's; writes it to
# bench/results/llm-routing.md and the servers' logs to
# bench/results/llm-logs/ (git-ignored).
#
# The engines' KV caches are sized (NUM_BLOCKS per worker) so that one
# worker holds a few of the shared system prompts but not all of them:
# what a real deployment looks like when the prompts outgrow one GPU.
#
# Knobs (environment): WORKERS=4 NUM_BLOCKS=320 SPEEDUP=1 USERS=64
#   SYSTEMS=8 TURNS=4 CONCURRENCY=16 SEED=42 PORT=18500
#   MODES="kv round-robin random"
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$(cd "${1:-$repo/build}" && pwd)"
WORKERS="${WORKERS:-4}" NUM_BLOCKS="${NUM_BLOCKS:-320}" SPEEDUP="${SPEEDUP:-1}"
USERS="${USERS:-64}" SYSTEMS="${SYSTEMS:-8}" TURNS="${TURNS:-4}"
CONCURRENCY="${CONCURRENCY:-16}" SEED="${SEED:-42}" PORT="${PORT:-18500}"
MODES="${MODES:-kv round-robin random}"
results="$repo/bench/results"
logs="$results/llm-logs"
mkdir -p "$logs"
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"

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

raw=()
for mode in $MODES; do
  setsid "$build/dynamo" serve "$repo/examples/llm/graphs/agg_router.py:Frontend" \
    -f "$repo/examples/llm/configs/agg_router.yaml" --Frontend.port="$PORT" \
    --Router.mode="$mode" --Worker.ServiceArgs.workers="$WORKERS" \
    --Worker.num-blocks="$NUM_BLOCKS" --Worker.speedup="$SPEEDUP" ${ROUTER_ARGS:-} \
    >"$logs/serve-$mode.log" 2>&1 &
  serve_pid=$!
  ok=""
  for _ in $(seq 300); do
    if [[ "$(grep -c 'Worker ready' "$logs/serve-$mode.log")" -ge "$WORKERS" ]] &&
       curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; then ok=1; break; fi
    sleep 0.1
  done
  if [[ -z "$ok" ]]; then
    echo "routing: the graph did not become healthy for mode $mode; see $logs/serve-$mode.log" >&2
    exit 1
  fi
  line=$(python3 "$here/prefix_load.py" --port "$PORT" --name "$mode" --seed "$SEED" \
           --users "$USERS" --systems "$SYSTEMS" --turns "$TURNS" \
           --concurrency "$CONCURRENCY" 2>>"$logs/load-$mode.log" | grep '^RESULT')
  echo "$line"
  raw+=("$line")
  stop_graph
done

printf '%s\n' "${raw[@]}" >"$results/llm-routing-raw.txt"
python3 - "$results/llm-routing-raw.txt" "$WORKERS" "$NUM_BLOCKS" "$USERS" "$SYSTEMS" "$TURNS" \
  "$CONCURRENCY" "$SEED" <<'EOF' | tee "$results/llm-routing.md"
import sys
path, workers, blocks, users, systems, turns, conc, seed = sys.argv[1:]
rows = []
for line in open(path):
    kv = dict(f.split("=", 1) for f in line.split()[1:])
    rows.append(kv)
print(f"{workers} simulated workers ({blocks} KV blocks x 16 tokens each), {users} users in "
      f"{systems} groups sharing a system prompt, {turns} turns each, concurrency {conc}, seed {seed}\n")
print("| router mode | requests | errors | TTFT mean | TTFT p90 | requests/s | cached prompt share |")
print("|---|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['name']} | {r['requests']} | {r['errors']} | {float(r['ttft_mean_ms']):.1f} ms | "
          f"{float(r['ttft_p90_ms']):.1f} ms | {float(r['throughput_rps']):.2f} | "
          f"{float(r['cached_fraction']) * 100:.0f}% |")
kv = next((r for r in rows if r["name"] == "kv"), None)
if kv:
    print()
    for r in rows:
        if r is not kv:
            print(f"- mean TTFT, {r['name']} / kv: {float(r['ttft_mean_ms']) / float(kv['ttft_mean_ms']):.2f}x")
EOF

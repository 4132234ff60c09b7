#!/usr/bin/env bash
# bench/llm/llama.sh [BUILD_DIR] - dynamo's llama.cpp engine against
# llama.cpp's own tools, same model (SmolLM2-135M Q4_1), same llama.cpp
# source (the pinned build of scripts/llama_cpp.sh), same machine, one run
# (`make bench-llama`):
#
#  1. The engine alone, in process (llama_engine_bench), against
#     `llama-batched-bench` at the same batch sizes, prompt and generation
#     lengths and threads; interleaved by batch size.
#  2. Serving, through the same OpenAI-API load generator (openai_load.py):
#     dynamo's examples/llm/graphs/agg.py with configs/agg_llama.yaml (one
#     worker, `threads` = the machine's cores) against `llama-server` with
#     --parallel = the config's max-num-seqs, continuous batching, its
#     prompt cache (cache_prompt, on by default) and --cache-reuse, the same
#     threads and batch size. Workloads unique and chat at each concurrency;
#     both servers stay up and the two runs of a configuration follow each
#     other (order alternating), so load from other work hits both. Each
#     configuration has its own seed: new prompts, cold caches on both.
#  3. Two dynamo workers behind the KV router (agg_router_llama.yaml, the
#     threads split between them) against the same llama-server (all the
#     threads), at the highest concurrency.
#
# Flash attention is on or off on every side at once (FLASH_ATTN=1, as the
# Worker's default `flash-attn: true`: llama-server's and batched-bench's
# -fa too; FLASH_ATTN=0: off everywhere), so the comparison stays like for
# like.
#
# Output: the RESULT lines, then markdown tables with the ratios, also in
# bench/results/llm-llama.md (raw lines in llm-llama-raw.txt, servers' logs
# in bench/results/llm-logs/; all git-ignored). Everything started here is
# stopped on exit, however it exits.
#
# Knobs (environment): CONCURRENCIES="1 4 16" WORKLOADS="unique chat"
#   MAX_TOKENS=32 TURNS=4 UNIQUE_PER_C=2 (unique requests per unit of
#   concurrency, at least 8) CHAT_USERS_MIN=4 (chat users: the concurrency,
#   at least this) ENGINE_PL="1 4 16" ENGINE_PP=128 ENGINE_TG=32
#   PARTS="engine serve router" PORT=18610 (llama-server on PORT+1)
#   THREADS=$(nproc) MODEL=~/.cache/dynamo/models/smollm2-135m.gguf
#   LLAMA_DIR=~/.cache/dynamo/llama.cpp-4227c9b FLASH_ATTN=1
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$(cd "${1:-$repo/build}" && pwd)"
deps="${DYN_DEPS_DIR:-$HOME/.cache/dynamo}"
LLAMA_DIR="${LLAMA_DIR:-$deps/llama.cpp-4227c9b}"
MODEL="${MODEL:-${DYN_MODEL_DIR:-$deps/models}/smollm2-135m.gguf}"
CONCURRENCIES="${CONCURRENCIES:-1 4 16}" WORKLOADS="${WORKLOADS:-unique chat}"
MAX_TOKENS="${MAX_TOKENS:-32}" TURNS="${TURNS:-4}"
UNIQUE_PER_C="${UNIQUE_PER_C:-2}" CHAT_USERS_MIN="${CHAT_USERS_MIN:-4}"
ENGINE_PL="${ENGINE_PL:-1 4 16}" ENGINE_PP="${ENGINE_PP:-128}" ENGINE_TG="${ENGINE_TG:-32}"
PARTS="${PARTS:-engine serve router}" PORT="${PORT:-18610}" THREADS="${THREADS:-$(nproc)}"
FLASH_ATTN="${FLASH_ATTN:-1}"
case "$FLASH_ATTN" in
  0) fa_dyn=false fa_ll=() ;;
  1) fa_dyn=true fa_ll=(-fa) ;;
  *) echo "bench-llama: FLASH_ATTN must be 0 or 1, not '$FLASH_ATTN'" >&2; exit 2 ;;
esac
ls_port=$((PORT + 1))
results="$repo/bench/results"
logs="$results/llm-logs"
raw="$results/llm-llama-raw.txt"
mkdir -p "$logs"
: >"$raw"
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"

for f in "$LLAMA_DIR/bin/llama-server" "$LLAMA_DIR/bin/llama-batched-bench" \
         "$build/bench/llama_engine_bench" "$build/dynamo"; do
  if [[ ! -x "$f" ]]; then
    echo "bench-llama: $f is missing: run scripts/deps.sh (llama.cpp) and make build" >&2
    exit 2
  fi
done
if [[ ! -f "$MODEL" ]]; then
  echo "bench-llama: the model $MODEL is missing: run scripts/fetch_model.sh smollm2-135m" >&2
  exit 2
fi
bash "$here/setup.sh" || { echo "bench-llama: bench/llm/setup.sh failed (aiohttp)" >&2; exit 2; }
py="$repo/bench/.venv-llm/bin/python"

# The config's settings, so llama-server gets the same ones.
cfg="$repo/examples/llm/configs/agg_llama.yaml"
setting() { awk -v k="$1:" '$1 == k {print $2; exit}' "$cfg"; }
seqs="$(setting max-num-seqs)" batch="$(setting max-num-batched-tokens)"
blocks="$(setting num-blocks)" block_size="$(setting block-size)"

# -- processes: each in its own process group, stopped on exit ------------
dyn_pid="" ls_pid=""
stop_group() { # PID: TERM the group, KILL it after 10 s
  [[ -z "$1" ]] && return
  kill -TERM -- "-$1" 2>/dev/null
  for _ in $(seq 100); do kill -0 -- "-$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$1" 2>/dev/null
}
cleanup() { stop_group "$dyn_pid"; stop_group "$ls_pid"; dyn_pid="" ls_pid=""; }
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

# Waits until PORT answers a one-token chat completion (the model is
# loaded and every service is up); that request also warms the server up.
wait_ready() { # NAME PORT PID LOG
  local body='{"model":"smollm2-135m","messages":[{"role":"user","content":"Hi"}],"max_tokens":1}'
  for _ in $(seq 600); do
    if curl -sf -o /dev/null -H 'Content-Type: application/json' -d "$body" \
         "http://127.0.0.1:$2/v1/chat/completions"; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then break; fi
    sleep 0.2
  done
  echo "bench-llama: $1 did not come up on port $2; see $4" >&2
  exit 1
}

start_dynamo() { # GRAPH CONFIG NAME
  setsid "$build/dynamo" serve "$repo/examples/llm/graphs/$1:Frontend" \
    -f "$repo/examples/llm/configs/$2" --Frontend.port="$PORT" --Worker.flash-attn="$fa_dyn" \
    >"$logs/$3.log" 2>&1 &
  dyn_pid=$!
  wait_ready "$3" "$PORT" "$dyn_pid" "$logs/$3.log"
}

start_llama_server() {
  # --parallel = our max-num-seqs. This llama.cpp gives every slot
  # ctx-size / parallel cells (--kv-unified too), so the context is sized
  # for 1,024 tokens a slot, enough for the longest chat turn: 4x the cells
  # our worker has. -nr: no repacked weights, as our engine loads the
  # model (they are wrong on AMX CPUs at this commit; docs/llm.md).
  setsid "$LLAMA_DIR/bin/llama-server" -m "$MODEL" --host 127.0.0.1 --port "$ls_port" \
    -a smollm2-135m --jinja -np "$seqs" -c $((seqs * 1024)) -cb --cache-reuse "$block_size" \
    -b "$batch" -ub "$batch" -t "$THREADS" -tb "$THREADS" -nr "${fa_ll[@]}" >"$logs/llama-server.log" 2>&1 &
  ls_pid=$!
  wait_ready llama-server "$ls_port" "$ls_pid" "$logs/llama-server.log"
}

load() { # NAME PORT WORKLOAD CONCURRENCY SEED
  local extra
  if [[ "$3" == unique ]]; then
    local n=$(( $4 * UNIQUE_PER_C )); (( n >= 8 )) || n=8
    extra="--requests $n"
  else
    local u=$4; (( u >= CHAT_USERS_MIN )) || u=$CHAT_USERS_MIN
    extra="--users $u --turns $TURNS"
  fi
  # shellcheck disable=SC2086
  "$py" "$here/openai_load.py" --url "http://127.0.0.1:$2" --name "$1" --workload "$3" \
    --concurrency "$4" --seed "$5" --max-tokens "$MAX_TOKENS" $extra 2>>"$logs/load.log" |
    grep '^RESULT' | tee -a "$raw"
}

# -- 1. the engine alone ----------------------------------------------------
if [[ " $PARTS " == *" engine "* ]]; then
  echo "== 1. the engine in process vs llama-batched-bench (pp $ENGINE_PP, tg $ENGINE_TG, $THREADS threads, flash attention $fa_dyn)"
  for pl in $ENGINE_PL; do
    "$build/bench/llama_engine_bench" "$MODEL" -t "$THREADS" -npp "$ENGINE_PP" -ntg "$ENGINE_TG" \
      -npl "$pl" -blocks "$blocks" -batch "$batch" "${fa_ll[@]}" 2>>"$logs/engine.log" |
      tee -a "$raw"
    "$LLAMA_DIR/bin/llama-batched-bench" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -nr "${fa_ll[@]}" \
      -c "$((blocks * block_size))" -b "$batch" -ub "$batch" -npp "$ENGINE_PP" -ntg "$ENGINE_TG" \
      -npl "$pl" --output-format jsonl 2>>"$logs/batched-bench.log" | grep '^{' |
      python3 -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l)
    print("RESULT name=batched-bench pl=%d pp=%d tg=%d t=%.3f speed=%.2f t_pp=%.3f speed_tg=%.2f"
          % (r["pl"], r["pp"], r["tg"], r["t"], r["speed"], r["t_pp"], r["speed_tg"]))' |
      tee -a "$raw"
  done
fi

# -- 2. serving: one dynamo worker vs llama-server --------------------------
seed=100
if [[ " $PARTS " == *" serve "* || " $PARTS " == *" router "* ]]; then
  start_llama_server
fi
if [[ " $PARTS " == *" serve "* ]]; then
  echo "== 2. serving: dynamo agg_llama (1 worker) vs llama-server (--parallel $seqs), $MAX_TOKENS tokens per answer, flash attention $fa_dyn"
  start_dynamo agg.py agg_llama.yaml dynamo-agg
  i=0
  for w in $WORKLOADS; do
    for c in $CONCURRENCIES; do
      seed=$((seed + 1)) i=$((i + 1))
      if (( i % 2 )); then
        load dynamo "$PORT" "$w" "$c" "$seed"; load llama-server "$ls_port" "$w" "$c" "$seed"
      else
        load llama-server "$ls_port" "$w" "$c" "$seed"; load dynamo "$PORT" "$w" "$c" "$seed"
      fi
    done
  done
  stop_group "$dyn_pid"; dyn_pid=""
fi

# -- 3. two workers behind the KV router vs llama-server --------------------
if [[ " $PARTS " == *" router "* ]]; then
  c_max="${CONCURRENCIES##* }"
  echo "== 3. dynamo agg_router_llama (2 workers, $THREADS threads in all) vs llama-server, concurrency $c_max"
  start_dynamo agg_router.py agg_router_llama.yaml dynamo-router
  i=0
  for w in $WORKLOADS; do
    seed=$((seed + 1)) i=$((i + 1))
    if (( i % 2 )); then
      load dynamo-router "$PORT" "$w" "$c_max" "$seed"; load llama-server-r "$ls_port" "$w" "$c_max" "$seed"
    else
      load llama-server-r "$ls_port" "$w" "$c_max" "$seed"; load dynamo-router "$PORT" "$w" "$c_max" "$seed"
    fi
  done
fi
cleanup

echo
{
  echo "Flash attention: $fa_dyn on both sides (FLASH_ATTN=$FLASH_ATTN)."
  echo
  python3 "$here/llama_report.py" "$raw"
} | tee "$results/llm-llama.md"

#!/usr/bin/env bash
# bench/llm/run.sh [BUILD_DIR] - the LLM stack's benchmarks (`make bench-llm`):
#
#  1. kv_indexer_bench: the radix indexer, single thread (block events/s,
#     find_matches p50/p99 for a 4,096-token prompt, 64 workers x 10,000
#     blocks), then NVIDIA's indexer (ai-dynamo-runtime's RadixTree, from
#     bench/.venv-nvidia, made by bench/nvidia/setup.sh) on the same shapes;
#  2. routing.sh: kv vs round-robin vs random end to end, 4 simulated
#     workers, a prefix-heavy multi-turn workload, same seed;
#  3. frontend_overhead.py: what the Frontend and the Processor add to a
#     request over calling the Worker directly.
#
# Output goes to the terminal and bench/results/llm-*.txt / .md (git-ignored).
# NO_NVIDIA=1 skips the NVIDIA indexer (and its venv setup).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="$(cd "${1:-$repo/build}" && pwd)"
results="$repo/bench/results"
mkdir -p "$results"
status=0

echo "== 1. KV indexer (single thread)"
"$build/bench/kv_indexer_bench" | tee "$results/llm-indexer.txt" || status=1
if [[ -z "${NO_NVIDIA:-}" ]]; then
  if bash "$repo/bench/nvidia/setup.sh"; then
    echo "-- NVIDIA ai-dynamo-runtime RadixTree, same workload"
    "$repo/bench/.venv-nvidia/bin/python" "$here/kv_indexer_nvidia.py" | tee -a "$results/llm-indexer.txt"
  else
    echo "NVIDIA indexer: not measured (bench/nvidia/setup.sh failed; see above)"
  fi
fi

echo "== 2. KV-aware routing end to end"
bash "$here/routing.sh" "$build" || status=1

echo "== 3. Frontend overhead"
python3 "$here/frontend_overhead.py" "$build" | tee "$results/llm-frontend.md" || status=1
exit $status

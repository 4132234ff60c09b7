#!/usr/bin/env bash
# bench/llm/setup.sh - the venv of bench/llm/openai_load.py: bench/.venv-llm
# with aiohttp, made once (pip, from the configured package index); later
# runs find it and do nothing. Exits non-zero, saying why, when it cannot.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/bench/.venv-llm"
AIOHTTP_VERSION=3.14.5
if "$venv/bin/python" -c "import aiohttp, sys; sys.exit(aiohttp.__version__ != '$AIOHTTP_VERSION')" 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q "aiohttp==$AIOHTTP_VERSION"

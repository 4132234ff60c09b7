#!/usr/bin/env bash
# Creates bench/.venv-nvidia and installs NVIDIA's Dynamo runtime
# (`ai-dynamo-runtime`, Python bindings over the Rust runtime) into it. The
# virtual environment is bench-only and git-ignored; nothing else uses it.
#
#   bash bench/nvidia/setup.sh          # idempotent: skips when installed
#   NV_RUNTIME_VERSION=1.6.1 bash ...   # pin another version
#
# The wheels are abi3 for CPython >= 3.10 (manylinux_2_28 x86_64/aarch64), so
# the first python3.1x found on PATH is used. Exit status 0 when the package
# imports afterwards; otherwise 1 with the reason on the last line of stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(cd "$here/.." && pwd)/.venv-nvidia"
version="${NV_RUNTIME_VERSION:-1.6.1}"

if [[ -x "$venv/bin/python" ]] &&
   "$venv/bin/python" -c 'import dynamo.runtime, uvloop' 2>/dev/null; then
  exit 0
fi

py=""
for cand in python3.11 python3.12 python3.10 python3.13 python3; do
  if command -v "$cand" >/dev/null 2>&1 &&
     "$cand" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
    py="$cand"
    break
  fi
done
if [[ -z "$py" ]]; then
  echo "no python >= 3.10 with the venv module (ai-dynamo-runtime needs CPython >= 3.10)" >&2
  exit 1
fi

rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "ai-dynamo-runtime==$version" >&2 || {
  echo "pip could not install ai-dynamo-runtime==$version for $("$py" -V 2>&1) on $(uname -m)" >&2
  exit 1
}
"$venv/bin/python" -c 'import dynamo.runtime, uvloop' || {
  echo "ai-dynamo-runtime==$version installed but does not import" >&2
  exit 1
}

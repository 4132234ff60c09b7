#!/usr/bin/env bash
# `make run`: serves the hello-world graph (Frontend -> Middle -> Backend)
# with `dynamo serve`, sends one request once it answers, and keeps serving
# until Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dynamo=$(command -v dynamo || echo "$here/../../${BUILD:-build}/dynamo")
"$dynamo" serve "$here/hello_world.py:Frontend" -f "$here/config.yaml" &
serve=$!
# Ctrl-C reaches serve too (same process group): just wait for its drain.
trap 'wait $serve' INT
trap 'kill -TERM $serve 2>/dev/null; wait $serve' TERM
for _ in $(seq 100); do
  curl -s -o /dev/null localhost:8000/generate -X POST -d '{"text": "ping"}' && break
  sleep 0.2
done
echo
echo "\$ curl -N -X POST localhost:8000/generate -H 'content-type: application/json' -d '{\"text\": \"hello world\"}'"
curl -sN -X POST localhost:8000/generate -H 'content-type: application/json' -d '{"text": "hello world"}'
echo "Serving on http://127.0.0.1:8000 — press Ctrl-C to stop."
wait $serve

#!/usr/bin/env bash
# bench/pipeline/run.sh [BUILD_DIR] - hello-world 3-hop pipeline
# (Frontend -> Middle -> Backend, HTTP POST /generate, streamed reply) served by
#
#   dynamo-python  dynamo serve examples/hello_world/hello_world.py:Frontend
#                  (-f config.yaml --Backend.ServiceArgs.workers=1)
#   dynamo-c       dynamo serve BUILD/examples/hello_world_c/libhello_services.so:Frontend
#   bentoml        bentoml serve bentoml_graph:Frontend        (bench/.venv-bentoml)
#   ray            serve run <config naming ray_graph:app>     (bench/.venv-ray)
#
# one framework at a time (the machine's cores are shared by the server and
# the load generator), each on its own port: start it, wait until a request
# returns the right reply (bounded), run load.py (the same stdlib client for
# all) at the same concurrency, stop it completely (its process group and
# every process below it; for Ray also `ray stop --force`), next. ROUNDS
# rounds of that, in the same order
# each round, so every ratio compares runs minutes apart at most.
#
# Prints a markdown table (medians over rounds; ratios are medians of the
# per-round ratios against dynamo-python) and writes it to
# bench/results/pipeline.md; raw RESULT lines go to
# bench/results/pipeline-raw.txt and every server's output to
# bench/results/pipeline-logs/ (all git-ignored). Nothing it started is left
# running when it ends, is interrupted (Ctrl-C) or gets SIGTERM.
#
# Knobs (environment):
#   CONCURRENCY=16 DURATION=10 WARMUP=3   load.py -c / -d / -w
#   ROUNDS=5                              start/measure/stop rounds
#   C1_DURATION=5                         then, on the same server, one
#                                         connection for this many seconds
#                                         (unloaded latency; 0 skips it)
#   FRAMEWORKS="dynamo-python dynamo-c bentoml ray"
#   BASE_PORT=18300                       ports BASE_PORT .. BASE_PORT+3
#   READY_TIMEOUT=60 RAY_READY_TIMEOUT=120 seconds to wait for the first reply
#   NO_SETUP=1                            do not run setup.sh (venvs as they are)
#   BENCH_ACCESS_LOG=1                    keep BentoML's / Ray's per-request
#                                         access logs on (their default)
# Exit status: 0 when dynamo-python ran, 1 when it did not, 2 on bad usage.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bench="$(cd "$here/.." && pwd)"
repo="$(cd "$bench/.." && pwd)"
build="${1:-$repo/build}"
if [[ ! -d "$build" ]]; then
  echo "usage: bash bench/pipeline/run.sh BUILD_DIR   ($build is not a directory)" >&2
  exit 2
fi
build="$(cd "$build" && pwd)"
CONCURRENCY="${CONCURRENCY:-16}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-3}"
C1_DURATION="${C1_DURATION:-5}"
ROUNDS="${ROUNDS:-5}"
FRAMEWORKS="${FRAMEWORKS:-dynamo-python dynamo-c bentoml ray}"
BASE_PORT="${BASE_PORT:-18300}"
READY_TIMEOUT="${READY_TIMEOUT:-60}"
RAY_READY_TIMEOUT="${RAY_READY_TIMEOUT:-120}"
PY="$(command -v python3)"

results="$bench/results"
logs="$results/pipeline-logs"
mkdir -p "$logs"
rm -f "$logs"/run-*.log
raw="$results/pipeline-raw.txt"
: >"$raw"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/dynamo-pipeline.XXXXXX")"

# The reply every framework must send (both events, in SSE framing):
expect=(--expect 'data: "Frontend: Middle: Backend: hello"'
        --expect 'data: "Frontend: Middle: Backend: world-mid-back"')

server_pgid="" # process group of the server that is running, if any
server_kind=""

# Every process below PID (children, grandchildren, ...), one per line.
# dynamo serve puts each worker in its own process group and Ray's raylet
# starts workers of its own, so the server's process group is not all of it.
descendants() {
  ps -eo pid=,ppid= | awk -v root="$1" '
    { kids[$2] = kids[$2] " " $1 }
    END { n = split(kids[root], q, " "); i = 1
          while (i <= n) { p = q[i++]; print p; m = split(kids[p], c, " "); for (j = 1; j <= m; j++) q[++n] = c[j] } }'
}

any_alive() { # any_alive PGID PID... : the group or one of the pids still exists
  local g="$1" p
  shift
  kill -0 -- "-$g" 2>/dev/null && return 0
  for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done
  return 1
}

# Stops the running server: SIGTERM to its process group (each framework's
# orderly stop), up to 10 s, then SIGKILL to the group and to every process
# that was below it; for Ray also `ray stop --force`.
# (stderr off: bash's "Aborted" notice when Ray's driver dies of SIGTERM)
stop_server() { _stop_server 2>/dev/null; }
_stop_server() {
  [[ -n "$server_pgid" ]] || return 0
  local g="$server_pgid" i tree
  tree=$(descendants "$g")
  kill -TERM -- "-$g"
  for i in $(seq 1 100); do
    any_alive "$g" $tree || break
    sleep 0.1
  done
  kill -KILL -- "-$g"
  for i in $tree; do kill -KILL "$i"; done
  wait "$g"
  if [[ "$server_kind" == ray ]]; then
    # Ray's own processes (raylet, GCS, dashboard, workers); normally already
    # gone by now. This stops every Ray process of this user on the machine.
    timeout 60 "$bench/.venv-ray/bin/ray" stop --force >>"$logs/run-ray-stop.log" 2>&1
  fi
  for i in $(seq 1 50); do
    any_alive "$g" $tree || break
    sleep 0.1
  done
  server_pgid=""
  server_kind=""
}

load_pid=""
# run_load ARGS...: load.py in the background (so a signal is handled at
# once, not when it ends); its RESULT line goes to $line
run_load() {
  : >"$tmp/load.out"
  "$PY" "$here/load.py" "$@" >"$tmp/load.out" 2>>"$logs/run-load.log" &
  load_pid=$!
  wait "$load_pid"
  load_pid=""
  line=$(grep '^RESULT' "$tmp/load.out")
}

cleanup() {
  [[ -n "$load_pid" ]] && kill -KILL "$load_pid" 2>/dev/null
  stop_server
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() { # something already answers on 127.0.0.1:$1
  "$PY" -c 'import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$1"
}

# start_server NAME PORT LOG: starts NAME in its own session (setsid) and sets
# server_pgid; returns 1 with a reason in $skip_reason when it cannot.
skip_reason=""
start_server() {
  local name="$1" port="$2" log="$3"
  skip_reason=""
  case "$name" in
    dynamo-python)
      setsid env PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}" \
        "$build/dynamo" serve "$repo/examples/hello_world/hello_world.py:Frontend" \
        -f "$repo/examples/hello_world/config.yaml" \
        --Backend.ServiceArgs.workers=1 --Frontend.port="$port" \
        >"$log" 2>&1 </dev/null &
      ;;
    dynamo-c)
      setsid env PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}" \
        "$build/dynamo" serve "$build/examples/hello_world_c/libhello_services.so:Frontend" \
        --Frontend.port="$port" >"$log" 2>&1 </dev/null &
      ;;
    bentoml)
      (cd "$here" && exec setsid env BENTOML_DO_NOT_TRACK=true BENTOML_HOME="$tmp/bentoml-home" \
        "$bench/.venv-bentoml/bin/bentoml" serve bentoml_graph:Frontend \
        --host 127.0.0.1 --port "$port" >"$log" 2>&1 </dev/null) &
      ;;
    ray)
      local access=false
      [[ "${BENCH_ACCESS_LOG:-}" == 1 ]] && access=true
      cat >"$tmp/ray-config.yaml" <<EOF
proxy_location: EveryNode
http_options:
  host: 127.0.0.1
  port: $port
logging_config:
  enable_access_log: $access
applications:
  - name: default
    route_prefix: /
    import_path: ray_graph:app
EOF
      (cd "$here" && exec setsid env RAY_USAGE_STATS_ENABLED=0 RAY_ADDRESS=local \
        "$bench/.venv-ray/bin/serve" run "$tmp/ray-config.yaml" >"$log" 2>&1 </dev/null) &
      ;;
  esac
  server_pgid=$!
  server_kind="$name"
}

# wait_ready PORT TIMEOUT LOG: 0 when a request got the right reply.
wait_ready() {
  local port="$1" limit="$2" log="$3" t0=$SECONDS
  while (( SECONDS - t0 < limit )); do
    if ! kill -0 "$server_pgid" 2>/dev/null; then
      skip_reason="server exited before answering (log: ${log#$repo/})"
      return 1
    fi
    if "$PY" "$here/load.py" --port "$port" --check --timeout 5 "${expect[@]}" 2>"$tmp/check.err"; then
      ready_s=$(( SECONDS - t0 ))
      return 0
    fi
    sleep 0.5
  done
  skip_reason="no correct reply within ${limit} s (log: ${log#$repo/}; last: $(tail -c 200 "$tmp/check.err" | tr -d '"\n'))"
  return 1
}

# ---------------------------------------------------------------------------
for prog in "$build/dynamo" "$build/examples/hello_world_c/libhello_services.so"; do
  if [[ ! -e "$prog" ]]; then
    echo "pipeline: $prog is missing; build first" >&2
    exit 2
  fi
done

if [[ "${NO_SETUP:-0}" != 1 ]]; then
  bash "$here/setup.sh" || echo "pipeline: setup.sh failed; frameworks without a venv are skipped" >&2
fi

# framework -> why it cannot run at all (venv missing or install failed)
declare -A unavailable=()
for fw in $FRAMEWORKS; do
  case "$fw" in
    dynamo-python | dynamo-c) ;;
    bentoml | ray)
      v="$bench/.venv-$fw"
      if [[ -f "$v/SKIPPED" ]]; then
        unavailable[$fw]="$(cat "$v/SKIPPED")"
      elif [[ ! -f "$v/INSTALLED" ]]; then
        unavailable[$fw]="no bench/.venv-$fw (run bench/pipeline/setup.sh)"
      fi
      ;;
    *) echo "pipeline: unknown framework $fw" >&2; exit 2 ;;
  esac
done

{
  echo "# started $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r)"
  echo "# python (load generator, dynamo workers): $("$PY" --version 2>&1)"
  echo "# dynamo: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$repo" status --porcelain 2>/dev/null | grep -q . && echo 'with local changes' || echo clean)), build $build"
  for fw in bentoml ray; do
    [[ -f "$bench/.venv-$fw/VERSION" ]] && echo "# $fw: $(cat "$bench/.venv-$fw/VERSION")"
  done
  echo "# load: concurrency=$CONCURRENCY duration=${DURATION}s warmup=${WARMUP}s rounds=$ROUNDS"
  echo "# unloaded: concurrency=1 duration=${C1_DURATION}s warmup=1s, right after the loaded run on the same server"
} >>"$raw"

i=0
declare -A port_of=()
for fw in $FRAMEWORKS; do port_of[$fw]=$(( BASE_PORT + i )); i=$(( i + 1 )); done

for fw in "${!unavailable[@]}"; do
  echo "RESULT name=$fw round=0 skipped=\"${unavailable[$fw]}\"" | tee -a "$raw"
done

for round in $(seq 1 "$ROUNDS"); do
  for fw in $FRAMEWORKS; do
    [[ -n "${unavailable[$fw]:-}" ]] && continue
    port="${port_of[$fw]}"
    log="$logs/run-$fw-r$round.log"
    if port_busy "$port"; then
      echo "RESULT name=$fw round=$round skipped=\"port $port already in use\"" | tee -a "$raw"
      continue
    fi
    limit="$READY_TIMEOUT"
    [[ "$fw" == ray ]] && limit="$RAY_READY_TIMEOUT"
    echo "pipeline: round $round/$ROUNDS: $fw on port $port" >&2
    start_server "$fw" "$port" "$log"
    ready_s=0
    if ! wait_ready "$port" "$limit" "$log"; then
      echo "RESULT name=$fw round=$round skipped=\"$skip_reason\"" | tee -a "$raw"
      stop_server
      continue
    fi
    run_load --port "$port" --name "$fw" -c "$CONCURRENCY" -d "$DURATION" -w "$WARMUP" "${expect[@]}"
    if [[ -z "$line" ]]; then
      line="RESULT name=$fw skipped=\"load.py failed (see ${logs#$repo/}/run-load.log)\""
    fi
    echo "${line/RESULT name=$fw /RESULT name=$fw round=$round ready_s=$ready_s }" | tee -a "$raw"
    if [[ "$C1_DURATION" != 0 ]]; then
      run_load --port "$port" --name "$fw@1" -c 1 -d "$C1_DURATION" -w 1 "${expect[@]}"
      [[ -n "$line" ]] && echo "${line/RESULT name=$fw@1 /RESULT name=$fw@1 round=$round }" | tee -a "$raw"
    fi
    stop_server
  done
done

echo >&2
"$PY" "$here/report.py" "$raw" | tee "$results/pipeline.md"
echo >&2
echo "pipeline: table in ${results#$repo/}/pipeline.md, raw lines in ${raw#$repo/}, logs in ${logs#$repo/}/" >&2
grep -q '^RESULT name=dynamo-python .*rps=' "$raw"

#!/usr/bin/env bash
# bench/run.sh BUILD_DIR - the whole benchmark suite in one run.
#
# Starts a dynamo control plane, the echo worker and nats-server (all on
# loopback), then runs, one program at a time (they share the machine's
# cores):
#   (b) tcp_pingpong     raw blocking loopback TCP ping-pong, the floor
#   (a) dyn_unary        unary 64 B -> 64 B through dynamo
#   (c) nats_reqrep      NATS request-reply (libnats)
#   (e) dyn_stream       64 B messages/s, one stream and 64 concurrent streams
#   (d) nvidia_unary.py  the same unary call through NVIDIA's ai-dynamo-runtime
#                        (its own etcd + NATS on loopback); NO_NVIDIA=1 skips it
# and prints a markdown table with the ratios, also written to
# bench/results/latest.md (raw RESULT lines in latest-raw.txt, logs of the
# run in bench/results/logs/). Everything it starts is stopped on exit,
# however it exits.
#
# Loopback latency on a shared VM drifts by several times over minutes, so
# the three latency cases are interleaved: ROUNDS rounds of (b), (a), (c),
# each of ITERS/ROUNDS round trips. The table shows the median over rounds
# of each round's p50 and p99, and each ratio is the median of the per-round
# ratios (a round compares cases measured seconds apart).
#
# Knobs (environment): ITERS (unary round trips per case, default 20000),
# ROUNDS (default 5), STREAM_MSGS (messages per streaming case, default
# 2000000), NV_ITERS (NVIDIA round trips, default 5000), NO_NVIDIA=1,
# BENCH_STRICT=1 (exit 3 when a target is missed; by default only a failed
# program fails the run).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="${1:-build}"
if [[ ! -d "$build" ]]; then
  echo "usage: bash bench/run.sh BUILD_DIR   ($build is not a directory)" >&2
  exit 2
fi
build="$(cd "$build" && pwd)"
bin="$build/bench"
ITERS="${ITERS:-20000}"
ROUNDS="${ROUNDS:-5}"
STREAM_MSGS="${STREAM_MSGS:-2000000}"
NV_ITERS="${NV_ITERS:-5000}"
(( ROUNDS >= 1 )) || ROUNDS=1
per_round=$(( ITERS / ROUNDS ))
(( per_round >= 100 )) || per_round=100

for prog in "$build/dynamo" "$bin/tcp_pingpong" "$bin/dyn_echo_worker" "$bin/dyn_unary" "$bin/dyn_stream"; do
  if [[ ! -x "$prog" ]]; then
    echo "bench: $prog is missing; build first (make build)" >&2
    exit 2
  fi
done

results_dir="$here/results"
logs="$results_dir/logs"
mkdir -p "$logs"
rm -f "$logs"/*.log
tmp="$(mktemp -d "${TMPDIR:-/tmp}/dynamo-bench.XXXXXX")"
out="$tmp/results.txt"
: >"$out"

pids=() # every background process we started, in start order

stop_pid() {
  local pid="$1"
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
  pids=()
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf 'bench: %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}

# run_case NAME ROUND LIMIT_S CMD...: runs one benchmark program in the
# foreground (killable by the trap), appending its RESULT lines, tagged
# with the round, to $out; its stderr is appended to logs/NAME.log.
run_case() {
  local name="$1" round="$2" limit="$3"
  shift 3
  log "running $name${round:+ (round $round of $ROUNDS)}"
  timeout --signal=TERM --kill-after=5 "$limit" "$@" >"$tmp/$name.out" 2>>"$logs/$name.log" &
  local pid=$!
  pids+=("$pid")
  wait "$pid"
  local rc=$?
  grep '^RESULT ' "$tmp/$name.out" | sed "s/^RESULT /RESULT round=${round:-0} /" >>"$out"
  if [[ $rc -ne 0 ]]; then
    log "$name failed (exit $rc); last lines of $logs/$name.log:"
    tail -n 5 "$logs/$name.log" >&2
  fi
  return $rc
}

# wait_ready PID TRIES CMD...: polls CMD every 50 ms until it succeeds, PID
# exits, or TRIES polls pass; succeeds only if CMD did.
wait_ready() {
  local pid=$1 tries=$2
  shift 2
  for _ in $(seq 1 "$tries"); do
    "$@" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  "$@" 2>/dev/null
}

skip() { printf 'RESULT round=0 name=%s skipped="%s"\n' "$1" "$2" >>"$out"; }

# ---- servers: dynamo control plane, echo worker, nats-server ------------------
export DYN_CONTROL_SOCKET="$tmp/cp.sock"
export DYN_LISTEN_HOST=127.0.0.1
"$build/dynamo" control --socket "$DYN_CONTROL_SOCKET" >"$logs/control.log" 2>&1 &
control=$!
pids+=("$control")
if ! wait_ready "$control" 100 test -S "$DYN_CONTROL_SOCKET"; then
  log "the control plane did not start:"
  cat "$logs/control.log" >&2
  exit 1
fi

nats_url=""
if [[ ! -x "$bin/nats_reqrep" ]]; then
  skip nats_reqrep "libnats not found when building"
elif ! command -v nats-server >/dev/null 2>&1; then
  skip nats_reqrep "nats-server not installed"
else
  nport="$(free_port)"
  nats-server -a 127.0.0.1 -p "$nport" >"$logs/nats-server.log" 2>&1 &
  nats_pid=$!
  pids+=("$nats_pid")
  if wait_ready "$nats_pid" 100 grep -q 'Server is ready' "$logs/nats-server.log"; then
    nats_url="nats://127.0.0.1:$nport"
  else
    skip nats_reqrep "nats-server did not start"
  fi
fi

# BACKEND=distributed: the dynamo programs discover through etcd and publish
# through NATS (both on loopback) instead of the embedded control plane; the
# request plane is the same direct TCP either way.
if [[ "${BACKEND:-embedded}" == distributed ]]; then
  if [[ -z "$nats_url" ]] || ! command -v etcd >/dev/null 2>&1; then
    log "BACKEND=distributed needs etcd and nats-server"
    exit 1
  fi
  eport="$(free_port)"
  epeer="$(free_port)"
  etcd --data-dir "$tmp/etcd" --listen-client-urls "http://127.0.0.1:$eport" \
    --advertise-client-urls "http://127.0.0.1:$eport" --listen-peer-urls "http://127.0.0.1:$epeer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$epeer" \
    --initial-cluster "default=http://127.0.0.1:$epeer" >"$logs/etcd.log" 2>&1 &
  etcd_pid=$!
  pids+=("$etcd_pid")
  etcd_healthy() { curl -s "http://127.0.0.1:$eport/health" | grep -q true; }
  if ! wait_ready "$etcd_pid" 200 etcd_healthy; then
    log "etcd did not start:"
    cat "$logs/etcd.log" >&2
    exit 1
  fi
  export ETCD_ENDPOINTS="http://127.0.0.1:$eport" NATS_SERVER="$nats_url"
  log "backend: etcd at $ETCD_ENDPOINTS, NATS at $NATS_SERVER"
fi

"$bin/dyn_echo_worker" >"$tmp/worker.out" 2>"$logs/worker.log" &
worker=$!
pids+=("$worker")
if ! wait_ready "$worker" 200 grep -q '^READY' "$tmp/worker.out"; then
  log "the echo worker did not start:"
  cat "$logs/worker.log" >&2
  exit 1
fi

# ---- latency rounds: (b) raw TCP, (a) dynamo unary, (c) NATS ------------------
failed=0
for ((r = 1; r <= ROUNDS; r++)); do
  run_case tcp_pingpong "$r" 120 "$bin/tcp_pingpong" "$per_round" || failed=1
  run_case dyn_unary "$r" 300 "$bin/dyn_unary" "$per_round" || failed=1
  if [[ -n "$nats_url" ]]; then
    run_case nats_reqrep "$r" 300 "$bin/nats_reqrep" "$nats_url" "$per_round" || {
      skip nats_reqrep "nats_reqrep failed, see logs/nats_reqrep.log"
      nats_url=""
    }
  fi
done

# ---- (e) streaming ----------------------------------------------------------------
run_case dyn_stream "" 300 "$bin/dyn_stream" "$STREAM_MSGS" || failed=1
if ! kill -0 "$worker" 2>/dev/null; then
  log "the echo worker died during the run:"
  tail -n 5 "$logs/worker.log" >&2
  failed=1
fi
worker_hwm="$(awk '/^VmHWM/ {print $2 " " $3}' "/proc/$worker/status" 2>/dev/null)"
# Stop the servers so they do not share the CPUs with the NVIDIA case.
for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]}"; done
pids=()

# ---- (d) NVIDIA Dynamo runtime -------------------------------------------------------
if [[ "${NO_NVIDIA:-0}" == 1 ]]; then
  skip nvidia_runtime "NO_NVIDIA=1"
else
  venv_py="$here/.venv-nvidia/bin/python"
  log "checking bench/.venv-nvidia (bench/nvidia/setup.sh)"
  if bash "$here/nvidia/setup.sh" >"$logs/nvidia-setup.log" 2>&1 && [[ -x "$venv_py" ]]; then
    run_case nvidia_runtime "" 600 env TMPDIR="$tmp" "$venv_py" "$here/nvidia/nvidia_unary.py" "$NV_ITERS" ||
      grep -q 'name=nvidia_runtime' "$out" || skip nvidia_runtime "nvidia_unary.py failed, see logs/nvidia_runtime.log"
    grep -q 'name=nvidia_runtime' "$out" || skip nvidia_runtime "nvidia_unary.py printed no result"
  else
    why="$(tail -n 1 "$logs/nvidia-setup.log" 2>/dev/null | tr -d '"')"
    skip nvidia_runtime "ai-dynamo-runtime did not install: ${why:-see logs/nvidia-setup.log}"
  fi
fi

# ---- the table ---------------------------------------------------------------------
cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
report="$tmp/latest.md"
awk -v backend="${BACKEND:-embedded}" -v cpu="${cpu:-unknown cpu}" -v ncpu="$(nproc)" -v kernel="$(uname -r)" \
    -v date="$(date -u '+%Y-%m-%d %H:%M UTC')" -v iters="$ITERS" -v rounds="$ROUNDS" \
    -v per_round="$per_round" -v smsgs="$STREAM_MSGS" -v nviters="$NV_ITERS" \
    -v strict="${BENCH_STRICT:-0}" -v hwm="${worker_hwm:-unknown}" '
function field(line, key) {
  if (match(line, " " key "=\"[^\"]*\"")) return substr(line, RSTART + length(key) + 3, RLENGTH - length(key) - 4)
  if (match(line, " " key "=[^ ]*")) return substr(line, RSTART + length(key) + 2, RLENGTH - length(key) - 2)
  return ""
}
# Appends v to the list named k (lists are "count" + indexed entries).
function push(arr, k, v) { arr[k, ++arr[k]] = v + 0 }
function median(arr, k,   n, i, j, t, a) {
  n = arr[k] + 0
  if (n == 0) return ""
  for (i = 1; i <= n; i++) a[i] = arr[k, i]
  for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^RESULT / {
  n = field($0, "name"); r = field($0, "round")
  seen[n] = 1
  s = field($0, "skipped")
  if (s != "") { if (!(n in skipped)) skipped[n] = s; next }
  if ((x = field($0, "p50_us")) != "") { push(P50, n, x); p50r[n, r] = x + 0 }
  if ((x = field($0, "p99_us")) != "") push(P99, n, x)
  if ((x = field($0, "msgs_per_s")) != "") push(MPS, n, x)
}
# Median over rounds of p50(a)/p50(b), using the rounds that have both.
function ratio(a, b,   r, key, k) {
  key = a "/" b
  if (key in RATIO_DONE) return RATIO_DONE[key]
  for (r = 0; r <= rounds; r++)
    if (((a, r) in p50r) && ((b, r) in p50r) && p50r[b, r] > 0) push(RAT, key, p50r[a, r] / p50r[b, r])
  k = median(RAT, key)
  RATIO_DONE[key] = k
  return k
}
# NVIDIA runs once, after the rounds: compare with the median dynamo p50.
function ratio_med(a, b,   x, y) {
  x = median(P50, a); y = median(P50, b)
  return (x == "" || y == "" || y == 0) ? "" : x / y
}
function rat(a, b) { return (a in P50 && b in P50) ? (a == "nvidia_runtime" || b == "nvidia_runtime" ? ratio_med(a, b) : ratio(a, b)) : "" }
function fmt(x) { return x == "" ? "–" : sprintf("%.2f", x) }
function fmtx(x) { return x == "" ? "" : sprintf("%.2f×", x) }
function commas(x,   s, r) {
  s = sprintf("%.0f", x); r = ""
  while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
  return s r
}
function row(label, n, vs_dyn,   e, m) {
  if (!(n in seen)) { printf "| %s | – | – | – | not run (see logs) | |\n", label; return }
  if (n in skipped && !(n in P50) && !(n in MPS)) { printf "| %s | – | – | – | skipped: %s | |\n", label, skipped[n]; return }
  m = median(MPS, n)
  e = ""
  if (vs_dyn && rat(n, "dynamo_unary") != "") e = fmtx(rat(n, "dynamo_unary")) " slower than dynamo"
  printf "| %s | %s | %s | %s | %s | %s |\n", label, fmt(median(P50, n)), fmt(median(P99, n)),
         m == "" ? "–" : commas(m), (n in P50) ? fmtx(rat(n, "tcp_pingpong")) : "", e
}
function target(desc, ok, value) {
  if (value == "") { printf "- %s: **n/a**\n", desc; return }
  printf "- %s: %s — **%s**\n", desc, value, ok ? "met" : "MISSED"
  if (!ok) missed++
}
END {
  printf "# dynamo benchmarks (discovery and events: %s)\n\n", backend
  printf "%s · %s · %d CPUs · Linux %s\n\n", date, cpu, ncpu, kernel
  printf "Unary cases (b), (a), (c): %d interleaved rounds of %d round trips each (after warmup); p50/p99 are medians over rounds, ratios medians of per-round ratios. NVIDIA (d): %d round trips, one run, compared with the median dynamo p50. Streams: %s messages of 64 B per case.\n\n", rounds, per_round, nviters, commas(smsgs)
  printf "| case | p50 µs | p99 µs | msgs/s | p50 vs raw TCP | vs dynamo unary p50 |\n"
  printf "|---|---:|---:|---:|---:|---|\n"
  row("(b) raw TCP ping-pong (blocking, loopback)", "tcp_pingpong", 0)
  row("(a) dynamo unary 64 B → 64 B", "dynamo_unary", 0)
  row("(c) NATS request-reply (libnats, nats-server)", "nats_reqrep", 1)
  row("(d) NVIDIA Dynamo runtime (ai-dynamo-runtime, etcd+NATS)", "nvidia_runtime", 1)
  row("(e) dynamo streaming, 1 stream", "dynamo_stream_1", 0)
  row("(e) dynamo streaming, 64 concurrent streams", "dynamo_stream_64", 0)
  printf "\nEcho worker peak RSS over the dynamo cases: %s.\n", hwm
  printf "\nTargets:\n\n"
  x = rat("dynamo_unary", "tcp_pingpong")
  target("dynamo unary p50 ≤ 1.25× raw TCP p50", x != "" && x <= 1.25, fmtx(x))
  x = rat("nats_reqrep", "dynamo_unary")
  target("dynamo unary ≥ 2× faster than NATS request-reply", x != "" && x >= 2, fmtx(x))
  x = rat("nvidia_runtime", "dynamo_unary")
  target("dynamo unary ≥ 2× faster than NVIDIA runtime", x != "" && x >= 2, fmtx(x))
  x = median(MPS, "dynamo_stream_1")
  target("≥ 500,000 streamed msgs/s on one connection", x != "" && x >= 500000, x == "" ? "" : commas(x) " msgs/s")
  if (strict == 1 && missed) exit 3
}' "$out" >"$report"
awk_rc=$?
cat "$report"
cp "$report" "$results_dir/latest.md"
cp "$out" "$results_dir/latest-raw.txt"
echo
echo "(written to bench/results/latest.md, raw results in bench/results/latest-raw.txt, logs in bench/results/logs/)"
if [[ $failed -ne 0 ]]; then
  log "a benchmark program failed; see the logs above"
  exit 1
fi
if [[ $awk_rc -eq 3 ]]; then
  log "BENCH_STRICT=1: a target was missed"
  exit 3
fi
[[ $awk_rc -eq 0 ]] || exit 1
exit 0

#!/usr/bin/env python3
"""Frontend overhead: what the OpenAI frontend and the Processor add to a request.

Serves examples/llm/graphs/agg.py with one simulated worker sped up so far
(--speedup) that the engine's modelled time is negligible, then times the
same one-token completion three ways, interleaved over ROUNDS rounds of N
sequential requests each (one request in flight, so the numbers are
latencies, not queueing):

  worker     the Worker's generate endpoint called directly with token ids
             (dynamo's Python client, direct routing): the baseline
  processor  the Processor's generate endpoint with the OpenAI request
             (tokenizer, detokenizer, then the Worker)
  http       POST /v1/completions to the Frontend over one keep-alive
             HTTP/1.1 connection (the whole path a user sees)

and prints the p50 of each (median over rounds) and the added p50 of the
Processor and of the Frontend. Both clients are Python on the same
machine; the http client is the standard library's http.client.

    python3 bench/llm/frontend_overhead.py BUILD_DIR
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def main_async(args, sock_path, port):
    from dynamo.runtime import DistributedRuntime
    rt = await DistributedRuntime.connect(control_socket=sock_path)
    ns = rt.namespace("dynamo")
    worker = await ns.component("Worker").endpoint("generate").client()
    proc = await ns.component("Processor").endpoint("generate").client()
    ids = await worker.wait_for_instances(1, timeout=30)
    await proc.wait_for_instances(1, timeout=30)
    prompt = "The quick brown fox jumps over the lazy dog"
    wbody = json.dumps({"token_ids": [300 + i for i in range(10)], "max_tokens": 1,
                        "ignore_eos": True}).encode()
    preq = {"model": "dynamo-sim", "prompt": prompt, "max_tokens": 1, "ignore_eos": True}
    pbody = json.dumps({"kind": "completion", "request_id": "cmpl-bench", "request": preq}).encode()
    hbody = json.dumps(preq)
    conn = http.client.HTTPConnection("127.0.0.1", port)

    async def one_worker():
        async for _ in worker.direct(wbody, ids[0]):
            pass

    async def one_proc():
        async for _ in proc.generate(pbody):
            pass

    def one_http():
        conn.request("POST", "/v1/completions", body=hbody,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data[:200]!r}")

    async def measure(kind):
        lat = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            if kind == "worker":
                await one_worker()
            elif kind == "processor":
                await one_proc()
            else:
                one_http()
            lat.append((time.perf_counter() - t0) * 1e6)
        return pct(lat, 0.5)

    for kind in ("worker", "processor", "http"):  # warm up connections and caches
        args_n, args.n = args.n, 50
        await measure(kind)
        args.n = args_n
    rounds = {"worker": [], "processor": [], "http": []}
    for _ in range(args.rounds):
        for kind in rounds:
            rounds[kind].append(await measure(kind))
    rt.close()
    return {k: statistics.median(v) for k, v in rounds.items()}, rounds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", nargs="?", default=os.path.join(ROOT, "build"))
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--speedup", type=float, default=1000.0)
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    sys.path.insert(0, os.path.join(build, "python"))
    tmp = tempfile.mkdtemp(prefix="dyn-fe-bench-")
    sock_path, port = os.path.join(tmp, "control.sock"), free_port()
    env = dict(os.environ, PYTHONPATH=os.path.join(build, "python"))
    log = open(os.path.join(tmp, "serve.log"), "w")
    serve = subprocess.Popen(
        [os.path.join(build, "dynamo"), "serve", f"{ROOT}/examples/llm/graphs/agg.py:Frontend",
         "-f", f"{ROOT}/examples/llm/configs/agg.yaml", "--control-socket", sock_path,
         f"--Frontend.port={port}", "--Worker.ServiceArgs.workers=1",
         f"--Worker.speedup={args.speedup}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 60
        while not os.path.exists(sock_path):
            if time.time() > deadline or serve.poll() is not None:
                print(open(log.name).read(), file=sys.stderr)
                return 1
            time.sleep(0.05)
        p50, rounds = asyncio.run(main_async(args, sock_path, port))
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(30)
    print(f"one-token completion, {args.rounds} rounds x {args.n} sequential requests, "
          f"engine speedup {args.speedup:g} (p50 per round: " +
          ", ".join(f"{k} {['%.0f' % x for x in v]}" for k, v in rounds.items()) + ")\n")
    print("| path | p50 | added |")
    print("|---|---:|---:|")
    print(f"| Worker endpoint, direct (baseline) | {p50['worker']:.0f} µs | |")
    print(f"| Processor endpoint (tokenize, detokenize, call the Worker) | {p50['processor']:.0f} µs "
          f"| +{p50['processor'] - p50['worker']:.0f} µs |")
    print(f"| HTTP POST /v1/completions to the Frontend | {p50['http']:.0f} µs "
          f"| +{p50['http'] - p50['processor']:.0f} µs over the Processor, "
          f"+{p50['http'] - p50['worker']:.0f} µs over the Worker |")
    print(f"\nRESULT worker_p50_us={p50['worker']:.0f} processor_p50_us={p50['processor']:.0f} "
          f"http_p50_us={p50['http']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

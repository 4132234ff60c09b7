#!/usr/bin/env python3
"""nvidia_unary.py - the unary benchmark through NVIDIA Dynamo's own runtime.

Uses the `ai-dynamo-runtime` package (Rust core, Python bindings) from the
bench-only virtual environment that setup.sh creates, in its default
deployment shape: etcd for discovery, NATS for the event plane, and the TCP
request plane (the default `DYN_REQUEST_PLANE=tcp`), all on loopback.

  nvidia_unary.py [iterations]          run everything, print one RESULT line
  nvidia_unary.py --serve               (internal) the worker process

The driver starts etcd and nats-server on free loopback ports, starts a
worker process that serves `bench.echo.unary` with the runtime's unary
adapter (serve_unary_endpoint: one 64-character string per request), then
in this process creates a client, waits for the instance and times
`UnaryClient.complete()` - send one 64-character request, await the one
response and the end of the stream - for each call. Everything it started
is stopped before it exits.

Prints `RESULT name=nvidia_runtime p50_us=X p99_us=Y`, or
`RESULT name=nvidia_runtime skipped="<reason>"` (exit 0) when the runtime,
etcd or nats-server is missing or the run fails.
"""

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

NAME = "nvidia_runtime"
ENDPOINT = "bench.echo.unary"
MSG = 64
WARMUP = 500
REQUEST = "q" * MSG
REPLY = "r" * MSG


def skip(reason: str) -> None:
    reason = " ".join(str(reason).split()).replace('"', "'")[:160]
    print(f'RESULT name={NAME} skipped="{reason}"', flush=True)
    sys.exit(0)


def runtime_env(etcd_url: str, nats_url: str) -> dict:
    env = dict(os.environ)
    env.update(
        ETCD_ENDPOINTS=etcd_url,
        NATS_SERVER=nats_url,
        DYN_DISCOVERY_BACKEND="etcd",
        DYN_REQUEST_PLANE="tcp",
        # Keep both TCP planes on loopback (the default picks a routable
        # interface address).
        DYN_TCP_RPC_HOST="127.0.0.1",
        DYN_TCP_RESPONSE_STREAM_HOST="127.0.0.1",
        # The runtime logs every routed request at INFO; that is not what we
        # are measuring.
        DYN_LOG=os.environ.get("NV_DYN_LOG", "warn,request_span=warn"),
    )
    return env


# ---------------------------------------------------------------- worker --

def serve() -> None:
    import uvloop
    from dynamo.runtime import DistributedRuntime, dynamo_worker, serve_unary_endpoint

    @dynamo_worker()
    async def worker(runtime: DistributedRuntime) -> None:
        endpoint = runtime.endpoint(ENDPOINT)

        async def echo(request, *, context):
            return REPLY

        await serve_unary_endpoint(endpoint, echo)

    uvloop.install()
    asyncio.run(worker())


# ---------------------------------------------------------------- client --

def run_client(iters: int) -> list:
    import uvloop
    from dynamo.runtime import DistributedRuntime, UnaryClient, dynamo_worker

    lat = []

    @dynamo_worker()
    async def client_main(runtime: DistributedRuntime) -> None:
        try:
            client = await runtime.endpoint(ENDPOINT).client()
            await asyncio.wait_for(client.wait_for_instances(), 30)
            unary = UnaryClient(client)
            first = await unary.complete(REQUEST)
            if first != REPLY:
                raise RuntimeError(f"unexpected reply {first!r}")
            clock = time.perf_counter_ns
            for i in range(WARMUP + iters):
                t0 = clock()
                await unary.complete(REQUEST)
                t1 = clock()
                if i >= WARMUP:
                    lat.append((t1 - t0) / 1e3)
        finally:
            runtime.shutdown()

    uvloop.install()
    asyncio.run(client_main())
    return lat


# ---------------------------------------------------------------- driver --

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


def wait_etcd(url: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if b"true" in r.read():
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("etcd did not become healthy")


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if this driver dies, even by SIGKILL."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn(argv, log_path, env=None) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)


def stop(proc) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log_tail(path: str, n: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        return " | ".join(lines[-n:])
    except OSError:
        return ""


def main() -> None:
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    # The runtime reads DYN_LOG when the module loads: set it first.
    os.environ["DYN_LOG"] = os.environ.get("NV_DYN_LOG", "warn,request_span=warn")
    try:
        import dynamo.runtime  # noqa: F401
        import uvloop  # noqa: F401
    except Exception as e:  # ImportError, or a broken native module
        skip(f"ai-dynamo-runtime not importable: {type(e).__name__}: {e}")
    etcd = shutil.which("etcd")
    nats = shutil.which("nats-server")
    if not etcd:
        skip("etcd binary not found")
    if not nats:
        skip("nats-server binary not found")

    # A TERM from run.sh's cleanup unwinds through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="nv-bench-")
    procs = []
    try:
        cport, pport, nport = free_port(), free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{cport}"
        peer_url = f"http://127.0.0.1:{pport}"
        nats_url = f"nats://127.0.0.1:{nport}"
        p = spawn([etcd, "--name", "bench", "--data-dir", os.path.join(tmp, "etcd"),
                   "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
                   "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                   "--initial-cluster", f"bench={peer_url}"],
                  os.path.join(tmp, "etcd.log"))
        procs.append(p)
        wait_etcd(etcd_url, p)
        p = spawn([nats, "-a", "127.0.0.1", "-p", str(nport), "-js",
                   "-sd", os.path.join(tmp, "js")], os.path.join(tmp, "nats.log"))
        procs.append(p)
        wait_port(nport, p, "nats-server")

        env = runtime_env(etcd_url, nats_url)
        os.environ.update(env)
        worker_log_path = os.path.join(tmp, "worker.log")
        worker = spawn([sys.executable, os.path.abspath(__file__), "--serve"],
                       worker_log_path, env=env)
        procs.append(worker)

        try:
            lat = run_client(iters)
        except Exception as e:
            tail = log_tail(worker_log_path)
            skip(f"run failed: {type(e).__name__}: {e}" + (f" (worker: {tail})" if tail else ""))
        if len(lat) != iters:
            skip(f"run failed: {len(lat)} of {iters} calls completed; worker: {log_tail(worker_log_path)}")
        lat.sort()
        print(f"RESULT name={NAME} p50_us={lat[iters * 50 // 100]:.2f} "
              f"p99_us={lat[iters * 99 // 100]:.2f}", flush=True)
    except SystemExit:
        raise
    except Exception as e:
        skip(f"setup failed: {type(e).__name__}: {e}")
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        os.environ["DYN_LOG"] = os.environ.get("NV_DYN_LOG", "warn,request_span=warn")
        serve()
    else:
        main()

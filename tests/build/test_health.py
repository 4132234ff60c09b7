"""Worker health ports: with `dynamo serve --health-port BASE`, worker i
serves GET /live (200 while its loop runs) and GET /health (503 until it is
registered and its start hooks finished, then 200 {"status": "ready"}), for
a Python and a C worker whose start hook takes about a second; and, for
both, 503 {"status": "unregistered"} while the control plane (embedded) or
etcd past the lease's TTL is gone, and 200 again once it is back."""

import http.client
import json
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import DYN_BIN, GRAPHS, SLOW_C, env_for_tests, free_port


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


READY = (200, {"status": "ready"})
UNREGISTERED = (503, {"status": "unregistered"})


@pytest.mark.parametrize("kind", ["python", "c"])
def test_health_is_503_until_started_then_200(serve, kind, tmp_path):
    name = "Slow" if kind == "python" else "SlowC"
    target = f"{GRAPHS}/slow.py:Slow" if kind == "python" else f"{SLOW_C}:SlowC"
    base = free_port()
    # The start hook runs until the gate file exists, not for a fixed
    # second: a test starved for a second on a loaded machine would
    # otherwise find the hook already done.
    gate = tmp_path / "gate"
    s = serve(target, "--health-port", base, env=env_for_tests(SLOW_GATE=gate))
    s.wait_for(f"{name}.0 health: http://127.0.0.1:{base}/health")
    s.wait_for(f"{name}: warming up")
    assert get(base, "/live") == (200, {"status": "live"})
    assert get(base, "/health") == (503, {"status": "starting"})
    gate.touch()
    out = s.wait_for(f"{name} ready")
    # "ready" is printed once the endpoint's registration is sent; until the
    # control plane acknowledges it /health may say "unregistered", never
    # "starting" again.
    wait_health(base, READY, meanwhile=UNREGISTERED)
    assert get(base, "/live")[0] == 200
    assert get(base, "/nope")[0] == 404
    # /metrics: the process's Prometheus registry (the Python graph adds
    # a metric of its own through dynamo.sdk.metrics).
    conn = http.client.HTTPConnection("127.0.0.1", base, timeout=5)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    if kind == "python":
        assert "# TYPE slow_warmups_total counter" in text and "slow_warmups_total 1" in text
        # The request plane's metrics, recorded by the C runtime in the
        # same registry, for the endpoint this worker serves.
        assert ('dynamo_endpoint_requests_total{namespace="slow",component="Slow",'
                'endpoint="ping",instance="') in text
    if kind == "python":
        assert f"health on port {base}" in out
    assert s.stop() == 0


def free_port_pair():
    """base and base + 1 both free, below the ephemeral range (32768 and up
    here), so that no outgoing connection of a test running beside this one
    takes base + 1 between the check and the worker's bind."""
    import random
    import socket
    for _ in range(100):
        base = random.randrange(20000, 32000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", base))
                b.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise AssertionError("no two free ports in a row")


def test_each_worker_gets_its_own_port(serve):
    base = free_port_pair()
    s = serve(f"{GRAPHS}/slow.py:Slow", "--health-port", base, "--Slow.ServiceArgs.workers=2")
    s.wait_for("Slow.1 health")
    out = s.output()
    assert f"Slow.0 health: http://127.0.0.1:{base}/health" in out
    assert f"Slow.1 health: http://127.0.0.1:{base + 1}/health" in out
    for i in (0, 1):
        s.wait_for(f"[Slow.{i}] Slow ready")
        wait_health(base + i, READY, meanwhile=UNREGISTERED)
    assert s.stop() == 0


def wait_health(port, want, timeout=30.0, meanwhile=None):
    """Polls /health until it answers want; returns what it last answered.
    meanwhile: the one other answer allowed before want; None allows any, a
    refused connection too."""
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        try:
            got = get(port, "/health")
        except OSError as e:
            got = repr(e)
        if got == want:
            return got
        assert meanwhile is None or got == meanwhile, f"/health answered {got} before {want}"
        time.sleep(0.05)
    raise AssertionError(f"/health never answered {want} within {timeout} s; last {got}")


@pytest.mark.parametrize("kind", ["python", "c"])
def test_health_follows_the_registration(kind, tmp_path):
    # A worker on its own, against a control plane we can kill: the worker
    # keeps running, but callers can no longer find it, so /health must say
    # so (503 "unregistered") until the control plane is back and the
    # worker's registration acknowledged (200 again).
    sock = tmp_path / "cp.sock"
    port = free_port()
    env = env_for_tests(DYN_CONTROL_SOCKET=sock, DYN_HEALTH_PORT=port, DYN_HEALTH_HOST="127.0.0.1")
    if kind == "python":
        cmd = [sys.executable, "-m", "dynamo.sdk.worker", f"{GRAPHS}/slow.py:Slow", "--service", "Slow"]
    else:
        cmd = [DYN_BIN, "worker", f"{SLOW_C}:SlowC", "--service", "SlowC"]

    def control():
        p = subprocess.Popen([DYN_BIN, "control", "--socket", str(sock)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not sock.exists() and time.time() < deadline:
            time.sleep(0.02)
        return p

    cp = control()
    worker = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_health(port, (200, {"status": "ready"}))
        cp.kill()
        cp.wait(5)
        wait_health(port, (503, {"status": "unregistered"}))
        assert get(port, "/live") == (200, {"status": "live"})
        sock.unlink(missing_ok=True)
        cp = control()
        wait_health(port, (200, {"status": "ready"}))
        assert worker.poll() is None
    finally:
        for p in (worker, cp):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def start_etcd(data, client, peer):
    url = f"http://127.0.0.1:{client}"
    p = subprocess.Popen(["etcd", "--name", "h", "--data-dir", str(data), "--listen-client-urls", url,
                          "--advertise-client-urls", url, "--listen-peer-urls",
                          f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls",
                          f"http://127.0.0.1:{peer}", "--initial-cluster",
                          f"h=http://127.0.0.1:{peer}", "--log-level", "error"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                if b'"health":"true"' in r.read():
                    return p
        except OSError:
            pass
        time.sleep(0.1)
    p.kill()
    raise AssertionError("etcd did not start")


@pytest.mark.parametrize("kind", ["python", "c"])
def test_health_follows_the_etcd_lease(kind, tmp_path):
    assert shutil.which("etcd"), "etcd is missing: scripts/deps.sh installs etcd-server"
    # With etcd, serving only queues the put, and a worker whose etcd is
    # gone past its lease's TTL is no longer found by callers: /health must
    # say "unregistered" then, and "ready" again once etcd is back.
    client, peer, port = free_port(), free_port(), free_port()
    sock = tmp_path / "cp.sock"
    env = env_for_tests(DYN_CONTROL_SOCKET=sock, DYN_HEALTH_PORT=port, DYN_HEALTH_HOST="127.0.0.1",
                        ETCD_ENDPOINTS=f"http://127.0.0.1:{client}", DYN_ETCD_TTL=2)
    if kind == "python":
        cmd = [sys.executable, "-m", "dynamo.sdk.worker", f"{GRAPHS}/slow.py:Slow", "--service", "Slow"]
    else:
        cmd = [DYN_BIN, "worker", f"{SLOW_C}:SlowC", "--service", "SlowC"]
    procs = [start_etcd(tmp_path / "etcd", client, peer)]
    try:
        # Events still go through a control plane (no NATS here).
        procs.append(subprocess.Popen([DYN_BIN, "control", "--socket", str(sock)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 10
        while not sock.exists() and time.time() < deadline:
            time.sleep(0.02)
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_health(port, (200, {"status": "ready"}))
        procs[0].kill()
        procs[0].wait(5)
        wait_health(port, (503, {"status": "unregistered"}), timeout=10)
        procs[0] = start_etcd(tmp_path / "etcd", client, peer)
        wait_health(port, (200, {"status": "ready"}), timeout=20)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)

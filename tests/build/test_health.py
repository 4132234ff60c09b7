"""Worker health ports: with `dynamo serve --health-port BASE`, worker i
serves GET /live (200 while its loop runs) and GET /health (503 until it is
registered and its start hooks finished, then 200 {"status": "ready"}), for
a Python and a C worker whose start hook takes about a second."""

import http.client
import json
import time

import pytest

from conftest import GRAPHS, SLOW_C, free_port


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["python", "c"])
def test_health_is_503_until_started_then_200(serve, kind):
    name = "Slow" if kind == "python" else "SlowC"
    target = f"{GRAPHS}/slow.py:Slow" if kind == "python" else f"{SLOW_C}:SlowC"
    base = free_port()
    s = serve(target, "--health-port", base)
    s.wait_for(f"{name}.0 health: http://127.0.0.1:{base}/health")
    s.wait_for(f"{name}: warming up")  # the start hook runs for about 1 s from here
    assert get(base, "/live") == (200, {"status": "live"})
    assert get(base, "/health") == (503, {"status": "starting"})
    out = s.wait_for(f"{name} ready")
    assert get(base, "/health") == (200, {"status": "ready"})
    assert get(base, "/live")[0] == 200
    assert get(base, "/nope")[0] == 404
    if kind == "python":
        assert f"health on port {base}" in out
    assert s.stop() == 0


def test_each_worker_gets_its_own_port(serve):
    base = free_port()
    s = serve(f"{GRAPHS}/slow.py:Slow", "--health-port", base, "--Slow.ServiceArgs.workers=2")
    s.wait_for("Slow.1 health")
    out = s.output()
    assert f"Slow.0 health: http://127.0.0.1:{base}/health" in out
    assert f"Slow.1 health: http://127.0.0.1:{base + 1}/health" in out
    deadline = time.time() + 10
    while time.time() < deadline and s.output().count("Slow ready") < 2:
        time.sleep(0.05)
    assert get(base, "/health")[0] == 200 and get(base + 1, "/health")[0] == 200
    assert s.stop() == 0

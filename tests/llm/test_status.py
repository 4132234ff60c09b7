"""`dynamo status` against real served graphs: the LLM graph agg_router
(Frontend -> Processor -> Router -> Worker x2) and the hello-world graph
(Python services). Every instance a worker announces ("NAME ready:
instance ID at ADDRESS") must be listed with that id and address; the
Workers' KV usage and queue come from their load_metrics, everyone's
in-flight requests from the runtime's answer to the status poll."""

import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import DYN_BIN, Serve, env_for_tests  # noqa: E402

GRAPHS = ROOT / "examples" / "llm" / "graphs"
CONFIGS = ROOT / "examples" / "llm" / "configs"
HELLO = ROOT / "examples" / "hello_world"

READY = re.compile(r"\] (\w+) ready: instance ([0-9a-f]+)(?: at (\S+))?")
ROW = re.compile(r"^(?P<service>\S+/\S+)\s+(?P<id>[0-9a-f]+)\s+(?P<pid>\d+|-)\s+(?P<address>\S+)\s+"
                 r"(?P<inflight>\d+(?: draining)?|-)\s+(?P<kv>\d+/\d+ \(\d+%\)|-)\s+"
                 r"(?P<queue>\d+|-)$")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(sock, *args, timeout=15):
    return subprocess.run([DYN_BIN, "status", "--control-socket", sock, *args],
                          capture_output=True, text=True, timeout=timeout)


def rows(out):
    """The table's rows as dicts; fails on a line that is neither a row nor
    the heading."""
    lines = out.strip().splitlines()
    assert lines[0].startswith("dynamo status: "), out
    assert lines[1].split() == ["SERVICE", "INSTANCE", "PID", "ADDRESS", "INFLIGHT", "KV",
                                "USED", "QUEUE"], out
    found = []
    for line in lines[2:]:
        m = ROW.match(line)
        assert m, f"not a row: {line!r} in\n{out}"
        found.append(m.groupdict())
    return found


def announced(output):
    """(service, instance id, address or '-') of each 'ready' line."""
    return {(m[1], m[2], m[3] or "-") for m in READY.finditer(output)}


def started(args, ready, env=None):
    s = Serve(args, env or env_for_tests(DYN_LOG="info"))
    for name, count in ready.items():
        s.wait_for(f"{name} ready", count=count)
    return s


@pytest.fixture
def stop_after():
    serves = []
    yield serves.append
    for s in serves:
        assert s.stop() == 0, s.output()


def test_status_of_the_llm_graph(stop_after):
    port = free_port()
    # Slow decoding without an early end, so that a request is still in
    # flight when status looks.
    s = started([f"{GRAPHS}/agg_router.py:Frontend", "-f", f"{CONFIGS}/agg_router.yaml",
                  f"--Frontend.port={port}", "--Worker.ServiceArgs.workers=2",
                  "--Worker.decode-base-us=20000", "--Worker.eos-probability=0"],
                 {"Frontend": 1, "Processor": 1, "Router": 1, "Worker": 2})
    stop_after(s)
    want = {(f"dynamo/{name}", iid, addr) for name, iid, addr in announced(s.output())}
    assert len(want) == 5, s.output()

    r = status(s.sock)
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(r.stdout)
    assert {(g["service"], g["id"], g["address"]) for g in got} == want, r.stdout
    counts = {}
    for g in got:
        counts[g["service"]] = counts.get(g["service"], 0) + 1
    assert counts == {"dynamo/Frontend": 1, "dynamo/Processor": 1, "dynamo/Router": 1,
                      "dynamo/Worker": 2}, r.stdout
    assert "4 services, 5 instances" in r.stdout.splitlines()[0]
    for g in got:
        assert g["pid"] != "-" and g["inflight"] == "0", r.stdout  # idle, and every one answered
        if g["service"] == "dynamo/Worker":  # the engine's cache: 1024 blocks (the config)
            assert re.fullmatch(r"0/1024 \(0%\)", g["kv"]) and g["queue"] == "0", r.stdout
        else:
            assert g["kv"] == "-" and g["queue"] == "-", r.stdout

    # One request streaming: in flight at the Frontend, the Processor and
    # one Worker, whose KV blocks now hold its sequence.
    body = json.dumps({"model": "dynamo-sim", "prompt": "Tell me a long story " * 8,
                       "max_tokens": 150, "stream": True}).encode()
    first, done = threading.Event(), threading.Event()

    def stream():
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                     {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.readline()  # the first token: the Worker has the sequence
            first.set()
            resp.read()
        done.set()

    t = threading.Thread(target=stream)
    t.start()
    try:
        assert first.wait(15)
        r = status(s.sock)
        assert not done.is_set(), "the request ended before status looked"
        got = {g["service"]: g for g in rows(r.stdout) if g["service"] != "dynamo/Worker"}
        workers = [g for g in rows(r.stdout) if g["service"] == "dynamo/Worker"]
        assert got["dynamo/Frontend"]["inflight"] == "1", r.stdout
        assert got["dynamo/Processor"]["inflight"] == "1", r.stdout
        assert sorted(w["inflight"] for w in workers) == ["0", "1"], r.stdout
        busy = next(w for w in workers if w["inflight"] == "1")
        used = int(busy["kv"].split("/")[0])
        assert used >= 3, r.stdout  # a prompt of more than 32 tokens, 16 a block
    finally:
        t.join(30)
    assert done.is_set()

    # --watch redraws every second until interrupted.
    p = subprocess.Popen([DYN_BIN, "status", "--watch", "--control-socket", s.sock],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 0, out + err
    frames = [f for f in out.split("\n\n") if f.strip()]
    assert len(frames) >= 2, out
    for f in frames:
        assert {(g["service"], g["id"], g["address"]) for g in rows(f)} == want, out


def test_status_of_the_hello_world_graph(stop_after):
    """Python services: no KV, but the in-flight column for every one."""
    s = started([f"{HELLO}/hello_world.py:Frontend", "-f", f"{HELLO}/config.yaml",
                 f"--Frontend.port={free_port()}"],
                {"Frontend": 1, "Middle": 1, "Backend": 2})
    stop_after(s)
    want = {(f"hello/{name}", iid, addr) for name, iid, addr in announced(s.output())}
    assert len(want) == 4, s.output()
    r = status(s.sock)
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(r.stdout)
    assert {(g["service"], g["id"], g["address"]) for g in got} == want, r.stdout
    assert sorted(g["service"] for g in got) == ["hello/Backend", "hello/Backend",
                                                  "hello/Frontend", "hello/Middle"]
    for g in got:
        assert g["inflight"] == "0" and g["pid"] != "-", r.stdout
        assert g["kv"] == "-" and g["queue"] == "-", r.stdout
    assert all(g["address"] == "-" for g in got if g["service"] == "hello/Frontend")


def test_no_graph(tmp_path):
    # No control plane at all.
    r = status(str(tmp_path / "none.sock"))
    assert r.returncode == 1
    assert "no graph found: cannot reach the control plane at" in r.stderr, r.stderr
    assert str(tmp_path / "none.sock") in r.stderr

    # A control plane that serves nothing.
    sock = str(tmp_path / "control.sock")
    cp = subprocess.Popen([DYN_BIN, "control", "--socket", sock], stdout=subprocess.PIPE,
                          text=True)
    try:
        assert "listening" in cp.stdout.readline()
        r = status(sock)
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"no graph found: nothing is served through {sock}" in r.stderr, r.stderr
    finally:
        cp.send_signal(signal.SIGTERM)
        cp.wait(10)

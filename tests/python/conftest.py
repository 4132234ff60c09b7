"""Shared fixtures: run `dynamo serve` on a graph, talk to it, and make sure
nothing it started outlives the test."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("DYN_BUILD", ROOT / "build"))
DYN_BIN = os.environ.get("DYN_BIN", str(BUILD / "dynamo"))
GRAPHS = Path(__file__).parent / "graphs"

sys.path.insert(0, str(BUILD / "python"))


def env_for_tests(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BUILD / "python"), str(GRAPHS)])
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Serve:
    """A `dynamo serve` process with its output collected in the background."""

    def __init__(self, args, env, cwd=None):
        self.tmp = tempfile.mkdtemp(prefix="dyn-serve-")
        self.sock = os.path.join(self.tmp, "control.sock")
        self.log = open(os.path.join(self.tmp, "out.log"), "w+")
        self.proc = subprocess.Popen([DYN_BIN, "serve", *args, "--control-socket", self.sock],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True)

    def output(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def wait_for(self, text, timeout=20.0, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = self.output()
            if out.count(text) >= count:
                return out
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"'{text}' not seen within {timeout}s; output:\n{self.output()}")

    def stop(self, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise AssertionError("dynamo serve did not stop within the grace period:\n" + self.output())


@pytest.fixture
def serve():
    started = []

    def start(*args, env=None, cwd=None):
        s = Serve(list(args), env or env_for_tests(), cwd)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait(5)


def call(sock, path, body, timeout=15.0, stream=False):
    """Calls ns/component/endpoint through the dynamo runtime (JSON)."""
    from dynamo.runtime import DistributedRuntime

    async def go():
        rt = await DistributedRuntime.connect(control_socket=sock)
        try:
            ns, comp, ep = path.split("/")
            c = await rt.namespace(ns).component(comp).endpoint(ep).client()
            c.set_wait(int(timeout * 500))  # fail inside the overall timeout
            out = [json.loads(x) async for x in c.generate(json.dumps(body).encode())]
            return out if stream else (out[-1] if out else None)
        finally:
            rt.close()

    return asyncio.run(asyncio.wait_for(go(), timeout))


def pids_alive(pids):
    alive = []
    for p in pids:
        try:
            os.kill(p, 0)
            with open(f"/proc/{p}/stat") as f:
                if f.read().split()[2] != "Z":
                    alive.append(p)
        except (ProcessLookupError, FileNotFoundError):
            pass
    return alive


def descendants(pid):
    """Every process whose ancestry leads to pid (from /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = set(), {pid}
    while frontier:
        nxt = {c for c, p in parent.items() if p in frontier and c not in out}
        out |= nxt
        frontier = nxt
    return out

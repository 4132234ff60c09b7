"""Fixtures for tests/build: run the `dynamo` CLI, serve artifacts, and make
sure nothing a test started outlives it."""

import os
import shutil
import signal
import socket
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
HELLO = ROOT / "examples" / "hello_world"
SLOW_C = os.environ.get("DYN_SLOW_C", str(BUILD / "tests" / "build" / "libslow_start.so"))
C_HELLO = BUILD / "examples" / "hello_world_c" / "libhello_services.so"

sys.path.insert(0, str(BUILD / "python"))


def env_for_tests(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(BUILD / "python")
    env["DYN_PYTHON"] = sys.executable
    env.update({k: str(v) for k, v in extra.items()})
    return env


def dynamo(*args, env=None, cwd=None, timeout=60):
    """Runs `dynamo ARGS` to completion; returns the CompletedProcess."""
    return subprocess.run([DYN_BIN, *map(str, args)], capture_output=True, text=True,
                          env=env or env_for_tests(), cwd=cwd, timeout=timeout)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """A `dynamo serve` process with its output collected in a file."""

    def __init__(self, args, env):
        self.tmp = tempfile.mkdtemp(prefix="dyn-build-serve-")
        self.log = open(os.path.join(self.tmp, "out.log"), "w+")
        self.proc = subprocess.Popen([DYN_BIN, "serve", *map(str, args)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def output(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def wait_for(self, text, timeout=60.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            out = self.output()
            if text in out:
                return out
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"'{text}' not seen within {timeout}s; output:\n{self.output()}")

    def stop(self, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
            raise AssertionError("dynamo serve did not stop:\n" + self.output())


@pytest.fixture
def serve():
    started = []

    def start(*args, env=None):
        s = Serve(list(args), env or env_for_tests())
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            try:
                os.killpg(s.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            s.proc.wait(5)
        shutil.rmtree(s.tmp, ignore_errors=True)


def descendants(pid):
    """Every live process whose ancestry leads to pid (from /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    parent[int(d)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = set(), {pid}
    while frontier:
        nxt = {c for c, p in parent.items() if p in frontier and c not in out}
        out |= nxt
        frontier = nxt
    return out

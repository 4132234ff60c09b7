"""The slow- and greedy-client attacks of issue 11 against a served LLM
Frontend, with its memory (VmRSS) measured: the figures in docs/limits.md.

Starts a control plane, the Frontend (libdynamo_llm.so) and the fake
Processor of tests/llm, each a `dynamo worker` process as
tests/llm/test_frontend.py does, then:

  slow:  20 connections that send a 16 MB request's head and all but 1,000
         bytes of its body, then one byte every 2 s; 20 that trickle a 70 KB
         request head a byte every 2 s; 2,000 idle connections. A normal
         request must still be answered. RSS before, during and after.
  burst: 16 concurrent complete 15 MB requests, RSS at the peak and once
         idle again.

    python3 bench/http_slow_clients.py [--build build] [--hold 15]

Loopback only; about half a minute.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait_until(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.05)
    raise SystemExit(f"{what} not within {timeout}s")


class Stack:
    def __init__(self, build, config):
        self.tmp = tempfile.mkdtemp(prefix="dyn-slow-")
        self.sock = os.path.join(self.tmp, "control.sock")
        self.port = free_port()
        fe = {"port": self.port, "host": "127.0.0.1", "model": "fake-model"}
        fe.update(config)
        self.env = dict(os.environ, DYN_CONTROL_SOCKET=self.sock,
                        DYNAMO_SERVICE_CONFIG=json.dumps({"Frontend": fe}))
        self.procs = []
        dyn = os.path.join(build, "dynamo")
        self.spawn("control", [dyn, "control", "--socket", self.sock])
        wait_until(lambda: os.path.exists(self.sock), 10, "control socket")
        self.frontend = self.worker(dyn, os.path.join(build, "lib", "libdynamo_llm.so"), "Frontend")
        fake = os.path.join(build, "tests", "llm", "libfake_processor.so")
        self.worker(dyn, fake, "Processor")
        self.worker(dyn, fake, "Worker")

    def spawn(self, name, argv):
        log = open(os.path.join(self.tmp, name + ".log"), "w+")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                             start_new_session=True)
        self.procs.append(p)
        return p

    def worker(self, dyn, lib, service):
        p = self.spawn(service, [dyn, "worker", f"{lib}:{service}", "--service", service])
        logf = os.path.join(self.tmp, service + ".log")
        wait_until(lambda: f"{service} ready" in open(logf).read(), 15, f"{service} ready")
        return p

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def normal_request(port):
    """GET /v1/models on a new connection: the status, or the error."""
    try:
        s = connect(port)
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else data[:40]
    except OSError as e:
        return f"{type(e).__name__}: {e}"


CHAT = b'{"model":"fake-model","messages":[{"role":"user","content":"%s"}],"max_tokens":1}'


def slow_attack(port, pid, hold, idle_n):
    print(f"  RSS at rest: {rss_mb(pid):.0f} MB", flush=True)
    socks, closed = [], [0]
    big = 16 * 1000 * 1000
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % big)
    body = b"x" * (big - 1000)
    for _ in range(20):  # trickling bodies
        s = connect(port)
        try:
            s.sendall(head)
            s.sendall(body)
        except OSError:
            closed[0] += 1
        socks.append(s)
    hdr = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-Pad-%d: %s\r\n" % (i, b"y" * 1000) for i in range(70))[:70000]
    for _ in range(20):  # trickling heads
        s = connect(port)
        try:
            s.sendall(hdr)
        except OSError:
            closed[0] += 1
        socks.append(s)
    idle = []
    for _ in range(idle_n):
        try:
            idle.append(connect(port))
        except OSError:
            break
    print(f"  {len(idle)} idle connections opened", flush=True)
    stop = threading.Event()

    def trickle():
        while not stop.wait(2):
            for s in socks:
                try:
                    s.send(b"y")
                except OSError:
                    pass
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    time.sleep(1)
    print(f"  RSS under attack: {rss_mb(pid):.0f} MB; a normal request: {normal_request(port)}",
          flush=True)
    peak = 0.0
    end = time.time() + hold
    while time.time() < end:
        peak = max(peak, rss_mb(pid))
        time.sleep(0.5)
    print(f"  after {hold:g} s of trickling: RSS {rss_mb(pid):.0f} MB (peak {peak:.0f} MB); "
          f"a normal request: {normal_request(port)}", flush=True)
    answers = {}
    for s in socks:
        s.setblocking(False)
        data, state = b"", "open"
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    state = "closed"
                    break
                data += d
        except BlockingIOError:
            pass
        except OSError:
            state = "reset"
        key = (data.split(b" ", 2)[1].decode() + " then " if data.startswith(b"HTTP/") else "") + state
        answers[key] = answers.get(key, 0) + 1
    print(f"  the 40 trickling connections: {answers}", flush=True)
    stop.set()
    for s in socks + idle:
        s.close()


def burst(port, pid, n=16, size=15 * 1000 * 1000):
    body = CHAT % (b"w " * ((size - 100) // 2))
    results = []
    peak = [0.0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb(pid))
            time.sleep(0.05)

    def one():
        try:
            s = connect(port)
            s.settimeout(60)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                      % len(body) + body)
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
            results.append(data.split(b" ", 2)[1].decode() if data else "closed")
        except OSError as e:
            results.append(type(e).__name__)
    w = threading.Thread(target=watch, daemon=True)
    w.start()
    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    done.set()
    time.sleep(3)
    counts = {r: results.count(r) for r in sorted(set(results))}
    print(f"  {n} x {size / 1e6:.0f} MB: answers {counts}; RSS peak {peak[0]:.0f} MB, "
          f"idle after 3 s {rss_mb(pid):.0f} MB", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--hold", type=float, default=15)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--config", default="{}", help="extra Frontend config (JSON)")
    a = ap.parse_args()
    st = Stack(os.path.abspath(a.build), json.loads(a.config))
    try:
        pid = st.frontend.pid
        print("slow clients:", flush=True)
        slow_attack(st.port, pid, a.hold, a.idle)
        time.sleep(1)
        print(f"  RSS once they left: {rss_mb(pid):.0f} MB", flush=True)
        print("burst:", flush=True)
        burst(st.port, pid)
    finally:
        st.close()


if __name__ == "__main__":
    sys.exit(main())

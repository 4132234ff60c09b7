"""The HTTP edge of @api services, as a hostile or unlucky client sees it:
bodies that do not fit the handler's types, JSON nested too deep, failures
that must not leak internal addresses, and streams cut by a shutdown, which
must still end with an error event and a proper end of the response."""

import json
import signal
import socket
import threading
import time

import pytest

from conftest import GRAPHS, ROOT

EDGE = f"{GRAPHS}/edge.py:Edge"
HELLO = f"{ROOT}/examples/hello_world/hello_world.py:Frontend"
HELLO_CONFIG = f"{ROOT}/examples/hello_world/config.yaml"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    """One raw HTTP/1.1 response, read to its end (or to where it was cut)."""

    def __init__(self, raw):
        self.raw = raw
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else None
        self.headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        self.complete = False
        self.body = b""
        if "content-length" in self.headers:
            n = int(self.headers["content-length"])
            self.body, self.complete = rest[:n], len(rest) >= n
        elif self.headers.get("transfer-encoding") == "chunked":
            self.body, self.complete = _dechunk(rest)

    def json(self):
        return json.loads(self.body)

    def events(self):
        return [json.loads(line[6:]) for line in self.body.decode().split("\n")
                if line.startswith("data: ")]


def _dechunk(data):
    """(body, True) for a chunked body that reached its last chunk."""
    body = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            return body, False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body, data.startswith(b"\r\n")
        if len(data) < size + 2:
            return body + data[:size], False
        body += data[:size]
        data = data[size + 2:]


def request(port, path, body, timeout=15.0):
    """POSTs body (bytes or a JSON value) and reads the whole response."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (path.encode(), len(data)) + data)
        raw = b""
        while True:
            r = Response(raw)
            if r.complete:
                return r
            chunk = sock.recv(65536)
            if not chunk:
                return r
            raw += chunk
    finally:
        sock.close()


def _start_edge(serve):
    port = _free_port()
    s = serve(EDGE, f"--Edge.port={port}")
    s.wait_for("Edge ready")
    s.wait_for("Dies ready")
    return s, port


# -- bodies that do not fit --------------------------------------------------

def test_bodies_that_do_not_fit_the_types_get_400_naming_the_field(serve):
    s, port = _start_edge(serve)
    r = request(port, "/typed", {"text": "hi", "count": 2, "tags": ["a"], "scale": 2})
    assert r.status == 200 and r.json() == {"text": "hi", "count": 2, "tags": ["a"],
                                            "scale": 2, "mode": "a"}
    bad = [({"text": 5}, "'text'", "string"),
           ({"text": "x", "count": "3"}, "'count'", "integer"),
           ({"text": "x", "count": True}, "'count'", "integer"),
           ({"text": "x", "tags": ["a", 7]}, "'tags.1'", "string"),
           ({"text": "x", "scale": "big"}, "'scale'", "number"),
           ({"text": "x", "mode": "c"}, "'mode'", "one of"),
           ({"text": "x", "extra": {"k": "v"}}, "'extra.k'", "integer"),
           ([1, 2], "JSON object", "array")]
    for body, field, why in bad:
        r = request(port, "/typed", body)
        assert r.status == 400 and r.complete, (body, r.raw)
        msg = r.json()["error"]["message"]
        assert field in msg and why in msg, (body, msg)
    # A pydantic model or a dataclass as the whole body: the field inside it.
    assert request(port, "/point", {"x": 1, "y": 2}).json() == {"sum": 3}
    r = request(port, "/point", {"x": 1, "y": "two"})
    assert r.status == 400 and "'y'" in r.json()["error"]["message"]
    assert request(port, "/box", {"corner": [1, 2]}).json() == {"corner": [1, 2], "label": ""}
    r = request(port, "/box", {"corner": [1, "2"]})
    assert r.status == 400 and "'corner.1'" in r.json()["error"]["message"]
    r = request(port, "/box", {"label": "no corner"})
    assert r.status == 400 and "'corner'" in r.json()["error"]["message"]
    # A stream: the 400 comes before any stream starts, not as a 200 and an event.
    r = request(port, "/words", {"text": 5})
    assert r.status == 400 and r.headers["content-type"].startswith("application/json")
    assert "'text'" in r.json()["error"]["message"]
    r = request(port, "/words", {"text": "a b"})
    assert r.status == 200 and r.complete and r.events() == ["a", "b"]
    assert s.stop() == 0


def test_json_nested_100000_deep_is_a_400(serve):
    s, port = _start_edge(serve)
    deep = b"[" * 100000 + b"]" * 100000
    for path, body in [("/typed", deep), ("/typed", b'{"text": "x", "tags": ' + deep + b"}"),
                       ("/point", b'{"x": ' + deep + b"}"), ("/words", deep)]:
        r = request(port, path, body)
        assert r.status == 400 and "nested too deeply" in r.json()["error"]["message"], r.raw[:300]
    assert request(port, "/words", {"text": "still fine"}).events() == ["still", "fine"]
    assert s.stop() == 0


# -- failures are named by kind; their text stays in the log ------------------

def test_failures_do_not_send_internal_addresses(serve):
    s, port = _start_edge(serve)
    r = request(port, "/fails", {"text": "x"})
    assert r.status == 500 and r.complete
    msg = r.json()["error"]["message"]
    assert "RuntimeError" in msg and "10.9.8.7" not in msg
    s.wait_for("cannot reach 10.9.8.7:4321")  # the whole text is logged
    # A dependency that dies mid-stream: its address reaches the log only.
    r = request(port, "/relay", {"n": 7})
    assert r.status == 200 and r.complete, r.raw
    events = r.events()
    assert events[0] == 7 and len(events) == 2, events
    err = events[1]["error"]
    assert err["code"] == 500 and "disconnected" in err["message"], err
    assert "127.0.0.1" not in r.raw.decode()
    out = s.wait_for("Edge: POST /relay")
    line = next(x for x in out.splitlines() if "Edge: POST /relay" in x)
    assert "127.0.0.1:" in line, line
    s.stop()


# -- streams cut by a shutdown end properly ------------------------------------

def test_sigterm_past_the_grace_ends_a_stream_with_an_error_event(serve):
    port = _free_port()
    s = serve(EDGE, f"--Edge.port={port}", "--grace", "2")
    s.wait_for("Edge ready")
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("r", request(port, "/forever", {})))
    t.start()
    time.sleep(0.5)
    s.proc.send_signal(signal.SIGTERM)
    t.join(15)
    r = got["r"]
    assert r.status == 200 and r.complete, r.raw[-300:]  # ends with the last chunk
    events = r.events()
    assert events[:-1] == list(range(len(events) - 1)) and len(events) > 5
    assert events[-1] == {"error": {"message": "the server is shutting down",
                                    "type": "ServiceUnavailableError", "code": 503}}
    assert s.proc.wait(15) == 0


@pytest.mark.parametrize("words", [2, 200])
def test_sigint_ends_every_stream_of_32_clients(serve, words):
    # 32 clients stream hello world back to back; SIGINT to `dynamo serve`
    # stops the whole graph at once (the Frontend's dependencies drain too).
    # Each client's last answer is a complete stream, an HTTP error, or a
    # stream ending in an error event and its proper end; never a 200 cut off.
    port = _free_port()
    s = serve(HELLO, "-f", HELLO_CONFIG, f"--Frontend.port={port}", "--grace", "3")
    s.wait_for("Frontend ready")
    s.wait_for("Middle ready")
    s.wait_for("Backend ready", count=2)
    text = " ".join(["w"] * words)
    expected = [f"Frontend: Middle: Backend: w" for _ in range(words - 1)]
    expected.append("Frontend: Middle: Backend: w-mid-back")
    stop = threading.Event()
    last = [None] * 32
    served = [0] * 32

    def client(i):
        while True:
            try:
                last[i] = request(port, "/generate", {"text": text})
            except OSError as e:  # the listener is gone: no answer is a fine answer
                last[i] = e
                return
            if last[i].status == 200 and last[i].complete:
                served[i] += 1
            if stop.is_set() or last[i].status != 200:
                return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    deadline = time.time() + 20
    while sum(served) < 64 and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    s.proc.send_signal(signal.SIGINT)
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    kinds = {"complete": 0, "error event": 0, "http error": 0, "no answer": 0}
    for r in last:
        if isinstance(r, OSError) or (r.status is None and not r.raw):
            kinds["no answer"] += 1
            continue
        assert r.complete, f"a response was cut off: {r.raw[-300:]!r}"
        if r.status != 200:
            assert r.json()["error"]["message"], r.raw
            kinds["http error"] += 1
            continue
        events = r.events()
        if events == expected:
            kinds["complete"] += 1
        else:
            assert events[-1]["error"]["code"] in (500, 503), events[-3:]
            assert events[:-1] == expected[:len(events) - 1]
            kinds["error event"] += 1
    print(kinds)
    assert sum(served) >= 64  # the clients really were streaming
    assert s.proc.wait(20) == 0

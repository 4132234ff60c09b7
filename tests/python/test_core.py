"""dynamo._core directly, against a `dynamo control`: the extension's own
contracts (error messages, registration, HTTP answers) without the SDK."""

import asyncio
import os
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import DYN_BIN, env_for_tests


@pytest.fixture
def control():
    tmp = tempfile.mkdtemp(prefix="dyn-core-")
    sock = os.path.join(tmp, "control.sock")
    proc = subprocess.Popen([DYN_BIN, "control", "--socket", sock], env=env_for_tests(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not os.path.exists(sock):
        assert proc.poll() is None and time.time() < deadline, "dynamo control did not start"
        time.sleep(0.02)
    yield sock
    proc.terminate()
    proc.wait(10)


def _http(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def run_with_runtime(sock, body):
    """Runs body(rt) on an asyncio loop with a DistributedRuntime."""
    from dynamo.runtime import DistributedRuntime

    async def go():
        rt = await DistributedRuntime.connect(control_socket=sock)
        try:
            return await body(rt)
        finally:
            rt.close()

    return asyncio.run(asyncio.wait_for(go(), 20))


def test_bad_names_get_the_message_for_what_was_wrong(control):
    from dynamo import _core

    async def body(rt):
        with pytest.raises(_core.DynamoError, match="endpoint path must be"):
            rt._core.serve("no-slashes", lambda req: None)
        with pytest.raises(_core.DynamoError, match="endpoint path must be"):
            rt._core.client("a/b")
        with pytest.raises(_core.DynamoError, match="invalid subject"):
            rt._core.subscribe("", lambda subject, data: None)
        with pytest.raises(TypeError, match="handler must be callable"):
            rt._core.serve("ns/comp/ep", 42)

    run_with_runtime(control, body)


def test_registered_once_discovery_holds_the_endpoint(control):
    async def body(rt):
        rt._core.serve("ns/comp/ep", lambda req: req.end())
        rt.kick()
        deadline = time.time() + 10
        while not rt._core.registered:
            assert time.time() < deadline, "never registered"
            await asyncio.sleep(0.01)
        rt._core.close()
        assert rt._core.registered is False

    run_with_runtime(control, body)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the raise, reported
def test_http_request_left_open_by_a_refused_answer_can_still_be_answered(control):
    """respond() with a status src/http refuses does not release the request:
    the handler can still answer it, and a handler that raises after
    starting a stream ends that stream instead of leaving it open."""
    results = {}

    async def body(rt):
        srv = rt._core.http_server("127.0.0.1", 0)

        def refused_then_error(req):
            results["refused"] = req.respond(99, "text/plain", b"x")
            results["answered"] = req.error(418, "teapot")

        def started_then_raise(req):
            req.start(200, "text/plain")
            req.write(b"partial")
            raise RuntimeError("handler bug")

        srv.route("GET", "/refused", refused_then_error)
        srv.route("GET", "/raise", started_then_raise)
        rt.kick()
        loop = asyncio.get_running_loop()
        try:
            a = await loop.run_in_executor(
                None, _http, srv.port, b"GET /refused HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            b = await loop.run_in_executor(
                None, _http, srv.port, b"GET /raise HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        finally:
            srv.stop()
        return a, b

    a, b = run_with_runtime(control, body)
    assert results == {"refused": False, "answered": True}
    assert a.startswith(b"HTTP/1.1 418"), a
    assert b"teapot" in a
    assert b.startswith(b"HTTP/1.1 200"), b
    assert b"partial" in b
    assert b.endswith(b"0\r\n\r\n"), b  # the chunked stream was ended


def test_component_subject_is_spelled_by_the_runtime():
    """Python components publish on the subject the C runtime spells
    (dyn_event_subject), so Python and C publishers and subscribers meet."""
    from dynamo import _core
    from dynamo.runtime import Component, Namespace

    assert _core.component_subject("ns", "Worker", "kv_events") == \
        "namespace.ns.component.Worker.kv_events"
    comp = Component(Namespace(None, "dynamo"), "Worker")  # no runtime needed
    assert comp.subject("load_metrics") == "namespace.dynamo.component.Worker.load_metrics"
    with pytest.raises(ValueError):
        _core.component_subject("n" * 600, "c", "x" * 600)

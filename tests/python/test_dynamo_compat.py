"""Code written for NVIDIA Dynamo 0.1-0.3 runs unchanged: its module paths,
ServiceConfig, @service options, hooks, @api shapes (StreamingResponse
included) and its low-level Python runtime (@dynamo_worker, serve_endpoint,
client.generate / round_robin / random / direct)."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import pytest

from conftest import BUILD, DYN_BIN, GRAPHS, env_for_tests
from test_sdk import _free_port, _post, run_cli


# -- module paths -------------------------------------------------------------

def test_dynamo_module_paths_re_export_one_implementation():
    import dynamo.runtime
    import dynamo.sdk
    from dynamo.runtime import DistributedRuntime, dynamo_worker  # noqa: F401
    from dynamo.runtime.logging import configure_dynamo_logging  # noqa: F401
    from dynamo.sdk import DYNAMO_IMAGE, endpoint, on_shutdown
    from dynamo.sdk.lib import config, decorators, dependency

    assert config.ServiceConfig is dynamo.sdk.ServiceConfig
    assert decorators.async_on_start is dynamo.sdk.async_on_start
    assert decorators.async_on_shutdown is dynamo.sdk.async_on_shutdown
    assert decorators.on_shutdown is on_shutdown
    assert dependency.depends is dynamo.sdk.depends
    assert isinstance(DYNAMO_IMAGE, str) and DYNAMO_IMAGE
    # dynamo.runtime became a package; what it exported before still is.
    for name in ("Namespace", "Component", "Endpoint", "Client", "ResponseStream", "DynamoError"):
        assert hasattr(dynamo.runtime, name), name

    @dynamo.sdk.service
    class S:
        @endpoint()
        async def gen(self, x: str):
            yield x

        @endpoint(name="other")
        async def two(self, x: str):
            return x

        @endpoint(is_api=True)
        async def web(self, x: str):
            return x

    assert sorted(S.endpoints) == ["gen", "other"] and list(S.apis) == ["web"]


def test_configure_dynamo_logging_follows_dyn_log(capfd):
    import logging
    from dynamo.runtime.logging import configure_dynamo_logging
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        os.environ["DYN_LOG"] = "warn"
        configure_dynamo_logging(service_name="Svc", worker_id=3)
        configure_dynamo_logging(service_name="Svc", worker_id=3)  # does not stack
        assert len(root.handlers) == 1 and root.level == logging.WARNING
        logging.getLogger("x").info("quiet")
        logging.getLogger("x").warning("loud")
        err = capfd.readouterr().err
        assert "quiet" not in err and err.count("loud") == 1 and "[Svc:3]" in err
    finally:
        os.environ.pop("DYN_LOG", None)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


# -- ServiceConfig --------------------------------------------------------------

@pytest.fixture
def config_env(monkeypatch):
    from dynamo.sdk.lib.config import ServiceConfig

    def load(cfg):
        monkeypatch.setenv("DYNAMO_SERVICE_CONFIG", json.dumps(cfg))
        ServiceConfig._instance = None  # as Dynamo's code resets it
        return ServiceConfig.get_instance()

    yield load
    ServiceConfig._instance = None


def test_service_config_as_args_common_configs(config_env):
    cfg = config_env({
        "Common": {"model": "m", "block-size": 16, "max-len": 100},
        "Worker": {"common-configs": ["model", "block-size"], "block-size": 64,
                   "enforce-eager": True, "skip-warmup": False, "kv": {"a": 1},
                   "ServiceArgs": {"workers": 2}},
        "Other": {"tp": 2},
    })
    assert isinstance(cfg, dict) and cfg is type(cfg).get_instance()
    # Subscribed and not overridden (model) comes first; overridden
    # (block-size) takes the service's value in the service's place; not
    # subscribed (max-len) never; ServiceArgs never; false booleans left out.
    assert cfg.as_args("Worker") == ["--model", "m", "--block-size", "64", "--enforce-eager",
                                     "--kv", '{"a": 1}']
    assert cfg.as_args("Other") == ["--tp", "2"]  # subscribes to nothing
    assert cfg.as_args("Nobody") == []
    assert cfg.as_args("Worker", prefix="block-") == ["--size", "64"]
    assert type(cfg).get_parsed_config("Worker") == {
        "model": "m", "block-size": 64, "enforce-eager": True, "skip-warmup": False, "kv": {"a": 1}}
    assert type(cfg).get_parsed_config("Nobody") == {}


def test_service_config_on_a_hand_built_raw_config():
    # Dynamo's code may build one itself: Common is applied on the fly.
    from dynamo.sdk.lib.config import ServiceConfig
    raw = ServiceConfig({"Common": {"model": "m", "x": 1},
                         "W": {"common-configs": ["model"], "flag": True}})
    assert raw.as_args("W") == ["--model", "m", "--flag"]
    assert raw.as_args("W", prefix="mo") == ["--del", "m"]


def test_service_config_require_errors_name_service_and_key(config_env):
    cfg = config_env({"Worker": {"model": "m"}})
    assert cfg.require("Worker", "model") == "m"
    with pytest.raises(ValueError) as e:
        cfg.require("Worker", "tokenizer")
    assert "Worker" in str(e.value) and "tokenizer" in str(e.value)
    with pytest.raises(ValueError) as e:
        cfg.require("Ghost", "model")
    assert "Ghost" in str(e.value) and "model" in str(e.value)


def test_service_config_reset_rereads_environment(config_env, monkeypatch):
    from dynamo.sdk.lib.config import ServiceConfig
    first = config_env({"A": {"k": 1}})
    assert ServiceConfig.get_instance() is first
    monkeypatch.setenv("DYNAMO_SERVICE_CONFIG", json.dumps({"A": {"k": 2}}))
    assert ServiceConfig.get_instance()["A"]["k"] == 1  # one per process...
    ServiceConfig._instance = None
    assert ServiceConfig.get_instance()["A"]["k"] == 2  # ...until reset


# -- @service options and hooks ----------------------------------------------

def test_service_options_of_dynamo_and_unknown_keys_warn():
    from dynamo.sdk import service
    with pytest.warns(UserWarning) as w:
        @service(traffic={"timeout": 12}, image="base:1", resource={"cpu": 1},
                 kubernetes_overwrites={})
        class S:
            pass
    said = [str(x.message) for x in w]
    assert len(said) == 2 and all(m.startswith("@service S: option '") for m in said)
    assert "'resource'" in said[0] and "'kubernetes_overwrites'" in said[1]
    assert S.timeout == 12.0 and S.image == "base:1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known options warn about nothing
        service(traffic={"timeout": 1}, image="x", envs=[{"name": "A", "value": "1"}])(type("T", (), {}))
    with pytest.raises(ValueError, match="traffic.timeout"):
        service(traffic={"timeout": "soon"})(type("U", (), {}))


def test_hooks_in_definition_order_sync_or_async():
    from dynamo.sdk import async_on_shutdown, async_on_start, on_shutdown, service

    @service
    class H:
        @async_on_start
        async def a(self):
            pass

        @async_on_start
        def b(self):
            pass

        @async_on_start
        async def c(self):
            pass

        @on_shutdown
        def d(self):
            pass

        @async_on_shutdown
        async def e(self):
            pass

    assert [h.__name__ for h in H.on_start] == ["a", "b", "c"]
    assert [h.__name__ for h in H.on_shutdown] == ["d", "e"]


def test_plan_carries_image_envs_and_warns_of_unknown_options():
    r = run_cli("serve", f"{GRAPHS}/dynamo03_hello.py:Frontend", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "option 'resource' is not supported" in r.stderr and "Backend" in r.stderr
    code = ("import json; from dynamo.sdk.plan import build_plan; "
            f"p = build_plan('{GRAPHS}/dynamo03_hello.py:Frontend', {{}}); "
            "print(json.dumps({s['name']: s.get('image') for s in p['services']}))")
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                       text=True, env=env_for_tests(DYNAMO_IMAGE="base/dynamo:7"), timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"Backend": "base/dynamo:7", "Middle": "base/dynamo:7",
                                    "Frontend": "registry.example/hello03:1"}


def test_build_uses_the_entry_image_as_base(tmp_path):
    r = run_cli("build", f"{GRAPHS}/dynamo03_hello.py:Frontend", "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    [dockerfile] = list(tmp_path.glob("*/env/docker/Dockerfile"))
    assert "ARG DYNAMO_IMAGE=registry.example/hello03:1\n" in dockerfile.read_text()


# -- graphs under `dynamo serve` ---------------------------------------------

def _sse(body):
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def test_dynamo_01_hello_world(serve, tmp_path):
    port = _free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("Middle:\n  suffix: m2\n")
    s = serve(f"{GRAPHS}/dynamo01_hello.py:Frontend", "-f", str(cfg), f"--Frontend.port={port}")
    for name in ("Frontend", "Middle", "Backend"):
        s.wait_for(f"{name} ready")
    status, ctype, body = _post(port, "/generate", json.dumps({"text": "hello world"}))
    assert status == 200 and ctype.startswith("text/event-stream")
    assert _sse(body) == ["Frontend: Middle: Backend: hello",
                          "Frontend: Middle: Backend: world-m2-back"]
    assert s.stop() == 0


def test_dynamo_03_hello_world_streaming_response(serve):
    import http.client
    port = _free_port()
    s = serve(f"{GRAPHS}/dynamo03_hello.py:Frontend", f"--Frontend.port={port}")
    for name in ("Frontend", "Middle", "Backend"):
        s.wait_for(f"{name} ready")
    out = s.output()
    assert "Frontend start hooks: first,second,third" in out  # in order, sync or async
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("POST", "/generate", body=json.dumps({"text": "hi there"}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    # The StreamingResponse's status and media type, its chunks as sent.
    assert r.status == 201 and r.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert r.read().decode() == ("Frontend: Middle: Backend: hi\n"
                                 "Frontend: Middle: Backend: there-mid-back\n")
    conn.close()
    # A body that does not fit the pydantic model: 400 naming the field.
    status, _, body = _post(port, "/generate", json.dumps({"txet": "x"}))
    assert status == 400 and "'text'" in body, body
    assert s.stop() == 0
    out = s.output()
    assert "Frontend on_shutdown ran" in out and "Frontend async_on_shutdown ran" in out


def test_traffic_timeout_bounds_api_requests(serve):
    port = _free_port()
    s = serve(f"{GRAPHS}/slow_api.py:Impatient", f"--Impatient.port={port}")
    s.wait_for("Impatient ready")
    status, _, body = _post(port, "/wait", json.dumps({"seconds": 5}))
    assert status == 504 and "timeout" in body
    status, _, body = _post(port, "/wait", json.dumps({"seconds": 0}))
    assert status == 200 and json.loads(body) == "done"
    assert s.stop() == 0


# -- the low-level runtime, as plain python3 processes ---------------------------

def test_dynamo_01_runtime_server_and_client_processes():
    tmp = tempfile.mkdtemp(prefix="dyn-compat-")
    env = env_for_tests(DYN_CONTROL_SOCKET=os.path.join(tmp, "control.sock"))
    log = open(os.path.join(tmp, "control.log"), "w")
    control = subprocess.Popen([DYN_BIN, "control"], stdout=log, stderr=subprocess.STDOUT, env=env)
    server = None
    try:
        deadline = time.time() + 10
        while not os.path.exists(env["DYN_CONTROL_SOCKET"]) and time.time() < deadline:
            time.sleep(0.05)
        server = subprocess.Popen([sys.executable, str(GRAPHS / "runtime01_server.py"), "rt01"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=env)
        assert server.stdout.readline().startswith("serving as "), "the server did not start"
        client = subprocess.run([sys.executable, str(GRAPHS / "runtime01_client.py"), "rt01"],
                                capture_output=True, text=True, env=env, timeout=30)
        assert client.returncode == 0, client.stdout + client.stderr
        got = {}
        for line in client.stdout.splitlines():
            got.update(json.loads(line))
        assert got == {
            "generate": list("hello world"),
            "round_robin": ["r", "r", {"chars": 2}],
            "random": ["a", "b"],
            "direct": ["x", "y"],
            "annotated": ["q"],
            "bytes": ['"r"', '"a"', '"w"'],  # bytes in, the JSON bytes out
        }
        # The worker serves until SIGTERM, then drains and exits cleanly.
        assert server.poll() is None
        server.send_signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.stdout.read()
    finally:
        for p in (server, control):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(5)
        log.close()


def test_serve_endpoint_bytes_handlers_keep_bytes():
    # A handler annotated bytes (or raw=True) gets the body as it came.
    code = r'''
import asyncio
from dynamo.runtime import DistributedRuntime

async def main():
    rt = await DistributedRuntime.connect()
    seen = []
    async def raw(body: bytes):
        seen.append(body)
        yield body + b"!"
    async def values(request):
        seen.append(request)
        return {"got": request}
    comp = rt.namespace("bytes").component("c")
    await comp.endpoint("raw").serve_endpoint(raw)
    await comp.endpoint("values").serve_endpoint(values)
    c = await comp.endpoint("raw").client()
    await c.wait_for_instances(1, 10)
    assert [x async for x in c.generate(b'{"a": 1}')] == [b'{"a": 1}!']
    v = await comp.endpoint("values").client()
    await v.wait_for_instances(1, 10)
    assert [x async for x in v.generate([1, 2])] == [{"got": [1, 2]}]
    assert seen[:2] == [b'{"a": 1}', [1, 2]], seen
    rt.close()
    print("ok")

asyncio.run(main())
'''
    tmp = tempfile.mkdtemp(prefix="dyn-bytes-")
    env = env_for_tests(DYN_CONTROL_SOCKET=os.path.join(tmp, "control.sock"))
    control = subprocess.Popen([DYN_BIN, "control"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 10
        while not os.path.exists(env["DYN_CONTROL_SOCKET"]) and time.time() < deadline:
            time.sleep(0.05)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=30)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr
    finally:
        control.kill()
        control.wait(5)

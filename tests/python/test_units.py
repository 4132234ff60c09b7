"""The SDK's pure-Python parts: config, codec, decorators, graph."""

import dataclasses
import json
import subprocess
import sys

import pytest

from conftest import GRAPHS, env_for_tests
from dynamo.sdk import ServiceConfig, depends, dynamo_endpoint, service
from dynamo.sdk.codec import decode, encode
from dynamo.sdk.config import ConfigError, resolve_common, service_args
from dynamo.sdk.graph import TargetError, load_target, resolve


def test_service_config_require_and_as_args():
    ServiceConfig._reset({"Common": {"model": "m"},
                          "Worker": {"common-configs": ["model"], "block-size": 64,
                                     "enforce-eager": True, "skip": False,
                                     "ServiceArgs": {"workers": 2}}})
    cfg = ServiceConfig.get_instance()
    assert cfg.require("Worker", "model") == "m"
    with pytest.raises(ConfigError) as e:
        cfg.require("Worker", "nope")
    assert "Worker" in str(e.value) and "nope" in str(e.value)
    assert cfg.as_args("Worker") == ["--model", "m", "--block-size", "64", "--enforce-eager"]
    assert cfg.as_args("Worker", prefix="block-") == ["--size", "64"]
    ServiceConfig._reset()


def test_config_errors_name_service_and_key():
    with pytest.raises(ConfigError, match="Worker.*common-configs.*nope"):
        resolve_common({"Common": {}, "Worker": {"common-configs": ["nope"]}})
    with pytest.raises(ConfigError, match="Worker.*ServiceArgs.bogus"):
        service_args({"Worker": {"ServiceArgs": {"bogus": 1}}}, "Worker")
    with pytest.raises(ConfigError, match="Worker.*ServiceArgs.workers"):
        service_args({"Worker": {"ServiceArgs": {"workers": 0}}}, "Worker")


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_codec_round_trips():
    assert decode(encode(Point(1, 2)), Point) == Point(1, 2)
    assert decode(encode({"a": [1, 2]})) == {"a": [1, 2]}
    assert decode(encode("text"), str) == "text"
    import pydantic  # scripts/deps.sh installs it

    class M(pydantic.BaseModel):
        text: str

    assert decode(encode(M(text="hi")), M) == M(text="hi")
    # A model someone serialized themselves arrives as a JSON string.
    dumped = getattr(M(text="hi"), "model_dump_json", None) or M(text="hi").json
    assert decode(encode(dumped()), M) == M(text="hi")


def test_endpoints_must_be_async():
    with pytest.raises(TypeError, match="async def"):
        @service
        class Bad:
            @dynamo_endpoint()
            def generate(self, x):
                return x


def test_link_needs_a_depends_edge():
    @service
    class A:
        pass

    @service
    class B:
        pass

    with pytest.raises(ValueError, match="has no depends"):
        A.link(B)


def test_dependency_cycle_is_an_error():
    @service
    class X:
        pass

    @service
    class Y:
        x = depends(X)

    X.dependencies["y"] = Y.dependencies["x"].__class__(Y)
    with pytest.raises(TargetError, match="cycle"):
        resolve(Y)


def test_package_module_target(tmp_path):
    # 'package.module:Svc' resolves through the import system.
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "graph.py").write_text(
        "from dynamo.sdk import service, dynamo_endpoint\n"
        "@service(dynamo={'namespace': 'p'})\n"
        "class Solo:\n"
        "    @dynamo_endpoint()\n"
        "    async def hi(self, x: str):\n"
        "        return x\n")
    code = ("import json; from dynamo.sdk.plan import build_plan; "
            "print(json.dumps(build_plan('mypkg.graph:Solo', {})))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, env=env_for_tests(), timeout=30)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["services"][0]["name"] == "Solo" and plan["services"][0]["endpoints"] == ["hi"]
    with pytest.raises(TargetError, match="no 'Nope'"):
        load_target(f"{GRAPHS}/knobs.py:Nope")


def test_c_service_depends_follow_and_link_prunes():
    from dynamo.sdk import c_service
    from dynamo.sdk.plan import service_plan
    worker = c_service("libx.so", "Worker")
    router = c_service("libx.so", "Router", depends=[worker])
    proc = c_service("libx.so", "Processor", depends=[router, worker])
    front = c_service("libx.so", "Frontend", depends=[proc], http_port=8123)
    # Unlinked: every declared edge is live.
    order, edges = resolve(front)
    assert [s.name for s in order] == ["Worker", "Router", "Processor", "Frontend"]
    assert ("Processor", "Router") in edges and ("Router", "Worker") in edges
    # link() keeps only the chosen path, as for Python services.
    front.link(proc).link(worker)
    order, edges = resolve(front)
    assert [s.name for s in order] == ["Worker", "Processor", "Frontend"]
    assert edges == [("Frontend", "Processor"), ("Processor", "Worker")]
    plan = service_plan(proc, {})
    assert plan["kind"] == "c" and plan["dependencies"] == ["Worker"]
    http = service_plan(front, {"Frontend": {"port": 9001}})["http"]
    assert http["port"] == 9001 and http["routes"] == []

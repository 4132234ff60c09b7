"""Graphs for config precedence, link pruning, crashes and shutdown."""

import dataclasses
import json
import os
import subprocess

from dynamo.sdk import ServiceConfig, depends, dynamo_context, dynamo_endpoint, service


@dataclasses.dataclass
class Ask:
    what: str


@service(dynamo={"namespace": "knobs"}, workers=1)
class Leaf:
    def __init__(self, greeting: str = "ctor", level: int = 0):
        self.greeting = greeting
        self.level = level

    @dynamo_endpoint()
    async def show(self, ask: Ask):
        cfg = ServiceConfig.get_instance().get("Leaf", {})
        return {"greeting": self.greeting, "level": self.level, "what": ask.what,
                "model": cfg.get("model"), "pid": os.getpid(),
                "env": os.environ.get("KNOB_ENV"),
                "context": {k: dynamo_context[k] for k in ("service", "namespace", "worker_index")}}

    @dynamo_endpoint()
    async def count(self, n: int):
        for i in range(n):
            yield i


@service(dynamo={"namespace": "knobs"})
class Other:
    @dynamo_endpoint()
    async def ping(self, x: str):
        return "pong"


@service(dynamo={"namespace": "knobs"})
class Middle:
    leaf = depends(Leaf)

    @dynamo_endpoint()
    async def relay(self, ask: Ask):
        return await self.leaf.show(ask)


@service(dynamo={"namespace": "knobs"})
class Top:
    middle = depends(Middle)
    other = depends(Other)

    @dynamo_endpoint()
    async def go(self, ask: Ask):
        return await self.middle.relay(ask)

    @dynamo_endpoint()
    async def raw(self, n: int):
        # The raw client of a dependency's endpoint, routed by hand.
        client = await self.middle.get_endpoint("relay")
        ids = await client.wait_for_instances(1, 10)
        async for chunk in client.direct(b'{"what": "direct"}', ids[0]):
            assert json.loads(chunk)["what"] == "direct"
        for i in range(n):
            yield i


# A service that crashes on its first start and a service whose worker
# starts a child process of its own.
@service(dynamo={"namespace": "knobs"})
class Flaky:
    def __init__(self):
        mark = os.path.join(os.environ["MARK_DIR"], "flaky_started")
        first = not os.path.exists(mark)
        with open(mark, "a") as f:
            f.write("x")
        if first:
            os._exit(3)
        self.child = subprocess.Popen(["sleep", "1000"])
        with open(os.path.join(os.environ["MARK_DIR"], "child_pid"), "w") as f:
            f.write(str(self.child.pid))

    @dynamo_endpoint()
    async def alive(self, x: str):
        return "yes"

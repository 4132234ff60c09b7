"""A graph for the fault tests: Frontend (HTTP, POST /generate) -> Backend,
whose stream yields n items, one every `delay` seconds, each naming the
worker's pid and address so the test knows which process to hurt.

    dynamo serve tests/distributed/slow_graph.py:Frontend --service-name Backend ...
"""

import asyncio
import os
from dataclasses import dataclass

from dynamo.sdk import api, depends, dynamo_context, dynamo_endpoint, service


@dataclass
class SlowRequest:
    n: int = 3
    delay: float = 0.0


@service(dynamo={"enabled": True, "namespace": "dist"}, workers=2)
class Backend:
    @dynamo_endpoint()
    async def generate(self, req: SlowRequest):
        for i in range(req.n):
            yield {"i": i, "pid": os.getpid(), "host": os.environ.get("DYN_ADVERTISE_HOST", ""),
                   "instance": f"{dynamo_context['instance_id']:x}"}
            if req.delay:
                await asyncio.sleep(req.delay)


@service(dynamo={"enabled": True, "namespace": "dist"})
class Frontend:
    backend = depends(Backend)

    @api
    async def generate(self, n: int = 3, delay: float = 0.0):
        async for item in self.backend.generate(SlowRequest(n=n, delay=delay)):
            yield item

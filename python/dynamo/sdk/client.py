"""The run-time side of depends(): endpoints of another service called like
local functions, with JSON on the wire."""

from __future__ import annotations

import os
from typing import Any, AsyncIterator, Dict

from dynamo.runtime import Client, DistributedRuntime
from dynamo.sdk.codec import decode, encode
from dynamo.sdk.service import DynamoService

# A dependency may start after its caller: requests wait this long for a
# first live instance before failing.
WAIT_MS = int(os.environ.get("DYN_DEPENDS_WAIT_MS", "30000"))


class ServiceClient:
    def __init__(self, rt: DistributedRuntime, target: DynamoService):
        self._rt = rt
        self._target = target
        self._clients: Dict[str, Client] = {}
        # traffic={"timeout": s} on the target bounds each call to it.
        self._deadline_ms = int(target.timeout * 1000) if target.timeout else 0
        for name, spec in target.endpoints.items():
            setattr(self, name, self._stream(name) if spec.streaming else self._unary(name))

    async def get_endpoint(self, name: str) -> Client:
        """The raw client of one endpoint (random / round_robin / direct)."""
        if name not in self._target.endpoints:
            raise AttributeError(f"{self._target.name} has no endpoint '{name}' "
                                 f"(endpoints: {', '.join(sorted(self._target.endpoints))})")
        c = self._clients.get(name)
        if c is None:
            ep = self._rt.namespace(self._target.namespace).component(self._target.name).endpoint(name)
            c = await ep.client()
            c.set_wait(WAIT_MS)
            self._clients[name] = c
        return c

    def _stream(self, name: str) -> Any:
        async def call(request: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
            c = await self.get_endpoint(name)
            body = encode(kwargs if request is None else request)
            async for chunk in c.generate(body, deadline_ms=self._deadline_ms):
                yield decode(chunk)
        call.__name__ = name
        return call

    def _unary(self, name: str) -> Any:
        async def call(request: Any = None, **kwargs: Any) -> Any:
            c = await self.get_endpoint(name)
            result = None
            body = encode(kwargs if request is None else request)
            async for chunk in c.generate(body, deadline_ms=self._deadline_ms):
                result = decode(chunk)
            return result
        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return f"<client of {self._target.namespace}/{self._target.name}>"

"""The dynamo SDK: inference graphs as Python classes.

    from dynamo.sdk import service, depends, dynamo_endpoint, async_on_start

    @service(dynamo={"enabled": True, "namespace": "demo"}, resources={"gpu": 1}, workers=2)
    class Backend:
        @dynamo_endpoint()
        async def generate(self, request: Request):
            yield ...

Serve a graph with ``dynamo serve path/to/graph.py:Frontend``.
"""

from dynamo.sdk.config import ServiceConfig
from dynamo.sdk.context import dynamo_context
from dynamo.sdk.decorators import api, async_on_shutdown, async_on_start, dynamo_endpoint
from dynamo.sdk.dependency import depends
from dynamo.sdk.service import CService, DynamoService, c_service, service

__all__ = [
    "service", "depends", "dynamo_endpoint", "api", "async_on_start", "async_on_shutdown",
    "dynamo_context", "ServiceConfig", "DynamoService", "CService", "c_service",
]

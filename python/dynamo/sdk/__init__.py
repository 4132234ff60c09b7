"""The dynamo SDK: inference graphs as Python classes.

    from dynamo.sdk import service, depends, dynamo_endpoint, async_on_start

    @service(dynamo={"enabled": True, "namespace": "demo"}, resources={"gpu": 1}, workers=2)
    class Backend:
        @dynamo_endpoint()
        async def generate(self, request: Request):
            yield ...

Serve a graph with ``dynamo serve path/to/graph.py:Frontend``.

Code written for NVIDIA Dynamo 0.1-0.3 imports the same objects under the
names it knows: ``endpoint`` (= ``dynamo_endpoint``), ``DYNAMO_IMAGE``, and
the ``dynamo.sdk.lib.*`` modules, which re-export what is defined here.
"""

from dynamo.sdk.config import ServiceConfig
from dynamo.sdk.context import dynamo_context
from dynamo.sdk.decorators import (api, async_on_shutdown, async_on_start, dynamo_endpoint,
                                   endpoint, on_shutdown)
from dynamo.sdk.dependency import depends
from dynamo.sdk.service import DYNAMO_IMAGE, CService, DynamoService, c_service, service

__all__ = [
    "service", "depends", "dynamo_endpoint", "endpoint", "api", "async_on_start",
    "async_on_shutdown", "on_shutdown", "dynamo_context", "ServiceConfig", "DynamoService",
    "CService", "c_service", "DYNAMO_IMAGE",
]

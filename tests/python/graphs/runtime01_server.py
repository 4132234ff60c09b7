"""A server in the style of NVIDIA Dynamo 0.1's Python runtime examples (our
own code): run as a plain `python3 runtime01_server.py NAMESPACE`."""

import asyncio
import sys

import uvloop

from dynamo.runtime import DistributedRuntime, dynamo_worker

uvloop.install()


class RequestHandler:
    async def generate(self, request):
        # A Python value in (a str or a dict), Python values out.
        text = request["text"] if isinstance(request, dict) else request
        for char in text:
            yield char
        if isinstance(request, dict):
            yield {"chars": len(text)}


@dynamo_worker(static=False)
async def worker(runtime: DistributedRuntime):
    component = runtime.namespace(sys.argv[1]).component("backend")
    await component.create_service()
    endpoint = component.endpoint("generate")
    print(f"serving as {runtime.instance_id:x}", flush=True)
    await endpoint.serve_endpoint(RequestHandler().generate)


if __name__ == "__main__":
    asyncio.run(worker())

"""A client in the style of NVIDIA Dynamo 0.1's Python runtime examples (our
own code): `python3 runtime01_client.py NAMESPACE` prints what each routing
mode returns, one JSON line each."""

import asyncio
import json
import sys

import uvloop

from dynamo.runtime import DistributedRuntime, dynamo_worker

uvloop.install()


@dynamo_worker()
async def worker(runtime: DistributedRuntime):
    endpoint = runtime.namespace(sys.argv[1]).component("backend").endpoint("generate")
    client = await endpoint.client()
    ids = await client.wait_for_instances()

    stream = await client.generate("hello world")
    print(json.dumps({"generate": [c async for c in stream]}), flush=True)
    print(json.dumps({"round_robin": [c async for c in await client.round_robin({"text": "rr"})]}))
    print(json.dumps({"random": [c async for c in client.random("ab")]}))
    direct = [c async for c in await client.direct("xy", ids[0])]
    print(json.dumps({"direct": direct}))
    annotated = [c.data() async for c in await client.generate("q", annotated=True)]
    print(json.dumps({"annotated": annotated}))
    raw = [c async for c in client.generate(b'"raw"')]  # bytes in, bytes out
    print(json.dumps({"bytes": [c.decode() for c in raw]}), flush=True)


if __name__ == "__main__":
    asyncio.run(worker())

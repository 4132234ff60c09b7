"""One service whose @async_on_start takes about a second, so a test can see
its /health answer 503 before the hook finishes and 200 after."""

import asyncio

from dynamo.sdk import async_on_start, dynamo_endpoint, service


@service(dynamo={"namespace": "slow"})
class Slow:
    @async_on_start
    async def warm_up(self) -> None:
        print("Slow: warming up", flush=True)
        await asyncio.sleep(1.0)

    @dynamo_endpoint()
    async def ping(self, x: str):
        yield "pong"

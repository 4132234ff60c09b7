"""One service whose @async_on_start takes about a second, so a test can see
its /health answer 503 before the hook finishes and 200 after; it counts
its warm-ups in a metric of its own, which /metrics shows."""

import asyncio

from dynamo.sdk import async_on_start, dynamo_endpoint, service
from dynamo.sdk.metrics import Counter

WARMUPS = Counter("slow_warmups_total", "Warm-ups run by this worker.")


@service(dynamo={"namespace": "slow"})
class Slow:
    @async_on_start
    async def warm_up(self) -> None:
        print("Slow: warming up", flush=True)
        WARMUPS.inc()
        await asyncio.sleep(1.0)

    @dynamo_endpoint()
    async def ping(self, x: str):
        yield "pong"

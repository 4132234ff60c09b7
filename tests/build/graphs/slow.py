"""One service whose @async_on_start takes a while, so a test can see its
/health answer 503 before the hook finishes and 200 after; it counts its
warm-ups in a metric of its own, which /metrics shows.

The hook takes about a second, or, with $SLOW_GATE set, until that file
exists (at most a minute): a test that must catch the worker mid-warm-up
then ends it when it has looked, however slowly a loaded machine runs it."""

import asyncio
import os
import time

from dynamo.sdk import async_on_start, dynamo_endpoint, service
from dynamo.sdk.metrics import Counter

WARMUPS = Counter("slow_warmups_total", "Warm-ups run by this worker.")


@service(dynamo={"namespace": "slow"})
class Slow:
    @async_on_start
    async def warm_up(self) -> None:
        print("Slow: warming up", flush=True)
        WARMUPS.inc()
        gate = os.environ.get("SLOW_GATE")
        if not gate:
            await asyncio.sleep(1.0)
            return
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    @dynamo_endpoint()
    async def ping(self, x: str):
        yield "pong"

"""An @api that streams slowly, for the shutdown-drains-HTTP test."""

import asyncio

from dynamo.sdk import api, service


@service(dynamo={"namespace": "slow"})
class Slow:
    @api()
    async def count(self, n: int):
        for i in range(n):
            await asyncio.sleep(0.05)
            yield i


@service(dynamo={"namespace": "slow"}, traffic={"timeout": 0.5})
class Impatient:
    @api
    async def wait(self, seconds: float):
        await asyncio.sleep(seconds)
        return "done"

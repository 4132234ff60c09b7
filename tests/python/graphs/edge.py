"""@api handlers for the HTTP-edge tests: typed parameters, a handler that
fails, and a stream relayed from a dependency that dies mid-stream."""

import asyncio
import dataclasses
import os
from typing import Dict, List, Literal, Optional

from pydantic import BaseModel

from dynamo.sdk import api, depends, dynamo_endpoint, service


class Point(BaseModel):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    corner: List[int]
    label: str = ""


@service(dynamo={"namespace": "edge"})
class Dies:
    @dynamo_endpoint()
    async def generate(self, n: int):
        yield n
        await asyncio.sleep(0.2)
        os._exit(3)  # the instance disconnects mid-stream


@service(dynamo={"namespace": "edge"})
class Edge:
    dies = depends(Dies)

    @api
    async def typed(self, text: str, count: int = 1, tags: Optional[List[str]] = None,
                    scale: float = 1.0, mode: Literal["a", "b"] = "a",
                    extra: Optional[Dict[str, int]] = None):
        return {"text": text, "count": count, "tags": tags, "scale": scale, "mode": mode}

    @api
    async def point(self, p: Point):
        return {"sum": p.x + p.y}

    @api
    async def box(self, b: Box):
        return {"corner": b.corner, "label": b.label}

    @api
    async def words(self, text: str):
        for w in text.split():
            yield w

    @api
    async def fails(self, text: str):
        raise RuntimeError(f"cannot reach 10.9.8.7:4321 for {text}")

    @api
    async def relay(self, n: int):
        async for x in self.dies.generate(n):
            yield x

    @api
    async def forever(self):
        i = 0
        while True:
            yield i
            i += 1
            await asyncio.sleep(0.05)

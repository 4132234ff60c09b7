"""``depends()``: an edge in the graph and, at run time, a client.

On the class it is a descriptor holding the target service. In a worker,
each instance gets a ``ServiceClient`` whose attributes are the target's
endpoints, called like local functions:

    async for x in self.backend.generate(req)   # streaming endpoint
    y = await self.backend.tokenize(req)        # single-response endpoint
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from dynamo.sdk.service import DynamoService


class Dependency:
    def __init__(self, on: "DynamoService"):
        from dynamo.sdk.service import DynamoService
        if not isinstance(on, DynamoService):
            raise TypeError(f"depends() takes a @service class, not {on!r}")
        self.on = on
        self.attr: Optional[str] = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        client = obj.__dict__.get(self.attr) if self.attr else None
        if client is None:
            raise RuntimeError(
                f"{type(obj).__name__}.{self.attr}: depends({self.on.name}) has no client here "
                "(the edge was pruned by link(), or the service runs outside `dynamo serve`)")
        return client

    def __repr__(self) -> str:
        return f"depends({self.on.name})"


def depends(on: "DynamoService") -> Any:
    """Declare that this service calls ``on``; see the module doc."""
    return Dependency(on)

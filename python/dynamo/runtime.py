"""The distributed runtime for Python: the C core driven by asyncio.

The C event loop runs on the asyncio thread: its epoll fd is registered
with ``loop.add_reader`` and its next timer with ``loop.call_later``, so a
request reaches a Python handler, and a response leaves it, with no thread
hand-off. Frames that Python code queues (responses, requests) are written
by one flush per asyncio iteration.

    runtime = await DistributedRuntime.connect()
    ep = runtime.namespace("demo").component("echo").endpoint("generate")
    await ep.serve_endpoint(handler)            # async generator or coroutine
    client = await ep.client()
    async for chunk in client.round_robin(b"hi"):
        ...
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union

from dynamo import _core
from dynamo._core import DynamoError

__all__ = ["DistributedRuntime", "Namespace", "Component", "Endpoint", "Client",
           "ResponseStream", "DynamoError"]

Handler = Callable[[bytes], Union[AsyncIterator[bytes], Awaitable[bytes]]]


class DistributedRuntime:
    """One per process: a C runtime whose loop asyncio drives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, control_socket: Optional[str] = None,
                 listen_host: Optional[str] = None, advertise_host: Optional[str] = None):
        self._loop = loop
        self._core = _core.Runtime(control_socket, listen_host, advertise_host)
        self._timer: Optional[asyncio.TimerHandle] = None
        self._kicked = False
        self._closed = False
        self._fd = self._core.fileno()
        loop.add_reader(self._fd, self._run)
        self._run()

    @classmethod
    async def connect(cls, **kw: Any) -> "DistributedRuntime":
        return cls(asyncio.get_running_loop(), **kw)

    # -- driving the C loop ---------------------------------------------
    def _run(self) -> None:
        if self._closed:
            return
        self._kicked = False
        timeout = self._core.poll()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if timeout >= 0:
            self._timer = self._loop.call_later(timeout / 1000.0, self._run)

    def kick(self) -> None:
        """Run the C loop soon: flushes queued frames, re-arms its timers."""
        if not self._kicked and not self._closed:
            self._kicked = True
            self._loop.call_soon(self._run)

    # -- naming -------------------------------------------------------------
    def namespace(self, name: str) -> "Namespace":
        return Namespace(self, name)

    @property
    def instance_id(self) -> int:
        return self._core.instance_id

    @property
    def address(self) -> str:
        return self._core.address

    # -- events ---------------------------------------------------------------
    def publish(self, subject: str, data: bytes) -> None:
        self._core.publish(subject, data)
        self.kick()

    def subscribe(self, subject: str, callback: Callable[[str, bytes], None]) -> Any:
        sub = self._core.subscribe(subject, callback)
        self.kick()
        return sub

    # -- serving ------------------------------------------------------------
    def _serve(self, path: str, handler: Handler) -> None:
        loop = self._loop

        def on_request(req: Any) -> None:
            task = loop.create_task(self._handle(handler, req))
            req.on_cancel = task.cancel

        self._core.serve(path, on_request)
        self.kick()

    async def _handle(self, handler: Handler, req: Any) -> None:
        try:
            result = handler(req.body)
            if inspect.isasyncgen(result):
                try:
                    async for item in result:
                        if not req.send(item):
                            break  # the caller cancelled
                        self.kick()
                finally:
                    await result.aclose()
            else:
                req.send(await result)
            req.end()
        except asyncio.CancelledError:
            req.fail("cancelled")
        except Exception as e:  # the caller gets the error, the worker lives on
            req.fail(f"{type(e).__name__}: {e}")
        finally:
            self.kick()

    async def shutdown(self, grace_ms: int = 5000) -> int:
        """Deregister and stop accepting, let in-flight requests finish for up
        to grace_ms (asyncio keeps running their handlers), cancel the rest,
        close. Returns how many requests had to be cancelled."""
        if self._closed:
            return 0
        self._core.drain()
        self.kick()
        deadline = self._loop.time() + grace_ms / 1000.0
        while self._core.inflight and self._loop.time() < deadline:
            await asyncio.sleep(0.005)
        cancelled = self._core.shutdown(0)
        self.close()
        return cancelled

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self._fd)
        self._core.close()


class Namespace:
    def __init__(self, rt: DistributedRuntime, name: str):
        self.runtime, self.name = rt, name

    def component(self, name: str) -> "Component":
        return Component(self, name)


class Component:
    def __init__(self, ns: Namespace, name: str):
        self.namespace, self.name = ns, name

    def endpoint(self, name: str) -> "Endpoint":
        return Endpoint(self, name)

    def subject(self, name: str) -> str:
        return f"namespace.{self.namespace.name}.component.{self.name}.{name}"


class Endpoint:
    def __init__(self, component: Component, name: str):
        self.component, self.name = component, name
        self.runtime = component.namespace.runtime
        self.path = f"{component.namespace.name}/{component.name}/{name}"

    async def serve_endpoint(self, handler: Handler) -> None:
        self.runtime._serve(self.path, handler)

    async def client(self) -> "Client":
        c = Client(self.runtime, self.runtime._core.client(self.path))
        self.runtime.kick()  # sends the watch
        return c


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class Client:
    """Calls one endpoint; follows its live instances."""

    def __init__(self, rt: DistributedRuntime, core: Any):
        self._rt, self._core = rt, core
        self._waiters: list[asyncio.Future] = []
        core.on_change = self._changed

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            _wake(f)

    def instance_ids(self) -> list[int]:
        return self._core.instances()

    async def wait_for_instances(self, n: int = 1, timeout: Optional[float] = None) -> list[int]:
        async def wait() -> None:
            while len(self._core.instances()) < n:
                fut = self._rt._loop.create_future()
                self._waiters.append(fut)
                await fut
        await asyncio.wait_for(wait(), timeout)
        return self.instance_ids()

    def set_wait(self, ms: int) -> None:
        """How long a request waits for a first live instance."""
        self._core.set_wait(ms)

    def generate(self, body: bytes, route: int = _core.ROUTE_RANDOM, instance_id: int = 0,
                 deadline_ms: int = 0) -> "ResponseStream":
        s = self._core.generate(body, route, instance_id, deadline_ms)
        self._rt.kick()
        return ResponseStream(self._rt, s)

    def random(self, body: bytes) -> "ResponseStream":
        return self.generate(body, _core.ROUTE_RANDOM)

    def round_robin(self, body: bytes) -> "ResponseStream":
        return self.generate(body, _core.ROUTE_ROUND_ROBIN)

    def direct(self, body: bytes, instance_id: int) -> "ResponseStream":
        return self.generate(body, _core.ROUTE_DIRECT, instance_id)


class ResponseStream:
    """An async iterator over one request's responses (bytes)."""

    __slots__ = ("_rt", "_s")

    def __init__(self, rt: DistributedRuntime, s: Any):
        self._rt, self._s = rt, s

    @property
    def instance_id(self) -> int:
        return self._s.instance_id

    def __aiter__(self) -> "ResponseStream":
        return self

    async def __anext__(self) -> bytes:
        s = self._s
        while True:
            item = s.pop()
            if item is not None:
                return item
            if s.done:
                if s.status == _core.OK:
                    raise StopAsyncIteration
                raise DynamoError(s.status, s.error)
            fut = self._rt._loop.create_future()
            s.waiter = functools.partial(_wake, fut)
            try:
                await fut
            except asyncio.CancelledError:
                self.cancel()
                raise

    def cancel(self) -> None:
        if not self._s.done:
            self._s.cancel()
            self._rt.kick()

    async def aclose(self) -> None:
        self.cancel()

    def __del__(self) -> None:
        try:
            if not self._s.done:
                self._s.cancel()
        except Exception:
            pass

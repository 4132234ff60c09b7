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

Payloads: a request sent as bytes is sent as is, and its responses come
back as bytes; any other value goes as JSON and its responses come back as
Python values (dynamo.runtime.wire). A handler gets the JSON value of the
request (or the bytes, when they are not JSON; or always the bytes when its
first parameter is annotated ``bytes`` or it is served with raw=True), and
what it yields or returns is encoded the same way. This is also the
Python runtime of NVIDIA Dynamo 0.1-0.3: ``@dynamo_worker()``,
``component.create_service()``, ``stream = await client.generate(obj)``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import signal
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Union, get_type_hints

from dynamo import _core
from dynamo._core import DynamoError
from dynamo.runtime.wire import decode_request, encode

__all__ = ["DistributedRuntime", "Namespace", "Component", "Endpoint", "Client",
           "ResponseStream", "Annotated", "DynamoError", "dynamo_worker"]

Handler = Callable[[Any], Union[AsyncIterator[Any], Awaitable[Any]]]


class DistributedRuntime:
    """One per process: a C runtime whose loop asyncio drives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, control_socket: Optional[str] = None,
                 listen_host: Optional[str] = None, advertise_host: Optional[str] = None):
        self._loop = loop
        self._core = _core.Runtime(control_socket, listen_host, advertise_host)
        self._timer: Optional[asyncio.TimerHandle] = None
        self._kicked = False
        self._closed = False
        self._serving = False
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
    def _serve(self, path: str, handler: Handler, raw: bool) -> None:
        loop = self._loop

        def on_request(req: Any) -> None:
            task = loop.create_task(self._handle(handler, req, raw))
            req.on_cancel = task.cancel

        self._core.serve(path, on_request)
        self._serving = True
        self.kick()

    async def _handle(self, handler: Handler, req: Any, raw: bool) -> None:
        try:
            result = handler(req.body if raw else decode_request(req.body))
            if inspect.isasyncgen(result):
                try:
                    async for item in result:
                        if not req.send(encode(item)):
                            break  # the caller cancelled
                        self.kick()
                finally:
                    await result.aclose()
            else:
                req.send(encode(await result))
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

    async def create_service(self) -> None:
        """Kept for code written for NVIDIA Dynamo, where a component had to
        be created before its endpoints. Here an endpoint registers when it
        is served, so there is nothing to do."""

    def subject(self, name: str) -> str:
        """The subject this component's events called name go out on,
        spelled by the runtime, as C components spell it."""
        return _core.component_subject(self.namespace.name, self.name, name)


class Endpoint:
    def __init__(self, component: Component, name: str):
        self.component, self.name = component, name
        self.runtime = component.namespace.runtime
        self.path = f"{component.namespace.name}/{component.name}/{name}"

    async def serve_endpoint(self, handler: Handler, raw: Optional[bool] = None) -> None:
        """Serve handler (an async generator function or a coroutine
        function of one request) on this endpoint and return. It gets the
        request as a Python value, or as bytes when raw is true; raw=None
        means: true when its first parameter is annotated ``bytes``."""
        if raw is None:
            raw = _wants_bytes(handler)
        self.runtime._serve(self.path, handler, raw)

    async def client(self) -> "Client":
        c = Client(self.runtime, self.runtime._core.client(self.path))
        self.runtime.kick()  # sends the watch
        return c


def _wants_bytes(handler: Handler) -> bool:
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):  # a builtin or a C callable
        return False
    if not params:
        return False
    ann = params[0].annotation
    if isinstance(ann, str):  # `from __future__ import annotations`
        try:
            ann = get_type_hints(handler).get(params[0].name, ann)
        except Exception:
            pass
    return ann in (bytes, "bytes")


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

    def generate(self, request: Any, route: int = _core.ROUTE_RANDOM, instance_id: int = 0,
                 deadline_ms: int = 0, annotated: Optional[bool] = None) -> "ResponseStream":
        """Send one request. bytes go as they are and their responses come
        back as bytes; any other value goes as JSON and its responses come
        back decoded. The stream is iterated with ``async for``, directly
        or after ``await`` (as NVIDIA Dynamo's clients are). annotated=True
        wraps each response in an Annotated whose data() is the value."""
        is_bytes = isinstance(request, (bytes, bytearray, memoryview))
        s = self._core.generate(encode(request), route, instance_id, deadline_ms)
        self._rt.kick()
        return ResponseStream(self._rt, s, decode=not is_bytes, annotated=bool(annotated))

    def random(self, request: Any, annotated: Optional[bool] = None) -> "ResponseStream":
        return self.generate(request, _core.ROUTE_RANDOM, annotated=annotated)

    def round_robin(self, request: Any, annotated: Optional[bool] = None) -> "ResponseStream":
        return self.generate(request, _core.ROUTE_ROUND_ROBIN, annotated=annotated)

    def direct(self, request: Any, instance_id: int,
               annotated: Optional[bool] = None) -> "ResponseStream":
        return self.generate(request, _core.ROUTE_DIRECT, instance_id, annotated=annotated)


class Annotated:
    """One response, as NVIDIA Dynamo's annotated streams give it."""

    __slots__ = ("_data",)

    def __init__(self, data: Any):
        self._data = data

    def data(self) -> Any:
        return self._data

    def __repr__(self) -> str:
        return f"Annotated(data={self._data!r})"


class ResponseStream:
    """An async iterator over one request's responses: bytes, or Python
    values when the request was not bytes."""

    __slots__ = ("_rt", "_s", "_decode", "_annotated")

    def __init__(self, rt: DistributedRuntime, s: Any, decode: bool = False,
                 annotated: bool = False):
        self._rt, self._s = rt, s
        self._decode, self._annotated = decode, annotated

    @property
    def instance_id(self) -> int:
        return self._s.instance_id

    def __aiter__(self) -> "ResponseStream":
        return self

    def __await__(self) -> Any:
        """``stream = await client.generate(x)``: the stream itself."""
        return self
        yield  # a generator: awaiting it returns at once

    async def __anext__(self) -> Any:
        s = self._s
        while True:
            item = s.pop()
            if item is not None:
                if self._decode:
                    item = decode_request(item)
                return Annotated(item) if self._annotated else item
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


def dynamo_worker(static: bool = False) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
    """``@dynamo_worker()`` as in NVIDIA Dynamo: the decorated coroutine
    function is called with a connected DistributedRuntime as its first
    argument. If it served endpoints, the worker keeps serving them after it
    returns, until SIGINT or SIGTERM, then drains and closes. ``static`` is
    accepted for compatibility: discovery here is the same either way."""
    del static

    def wrap(func: Callable[..., Awaitable[Any]]) -> Any:
        @functools.wraps(func)
        async def run(*args: Any, **kwargs: Any) -> Any:
            rt = await DistributedRuntime.connect()
            try:
                result = await func(rt, *args, **kwargs)
                if rt._serving:
                    await _until_signalled(rt._loop)
                    await rt.shutdown()
                return result
            finally:
                rt.close()
        return run
    return wrap


async def _until_signalled(loop: asyncio.AbstractEventLoop) -> None:
    stop = asyncio.Event()
    sigs = (signal.SIGINT, signal.SIGTERM)
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)

"""Method decorators: endpoints, HTTP routes and lifecycle hooks.

They only mark methods; the worker (dynamo.sdk.worker) finds the marks on
the class and serves them. An endpoint's request type comes from the
annotation of its first parameter after ``self``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional, TypeVar, get_type_hints

F = TypeVar("F", bound=Callable[..., Any])


class EndpointSpec:
    """What @dynamo_endpoint or @api recorded about a method."""

    def __init__(self, func: Callable[..., Any], name: str, kind: str,
                 method: str = "POST", path: Optional[str] = None):
        self.func = func
        self.name = name
        self.kind = kind  # "endpoint" or "api"
        self.streaming = inspect.isasyncgenfunction(func)
        if not self.streaming and not inspect.iscoroutinefunction(func):
            raise TypeError(f"{func.__qualname__}: a dynamo endpoint must be `async def` "
                            "(an async generator streams, a coroutine returns one response)")
        self.method = method
        self.path = path or f"/{name}"
        self.params = [p for p in inspect.signature(func).parameters.values()][1:]
        self.hints = _param_types(func)
        self.request_type = self.hints.get(self.params[0].name) if self.params else None

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}{' (streaming)' if self.streaming else ''}>"


def _param_types(func: Callable[..., Any]) -> Dict[str, Any]:
    """The parameters' annotations, resolved (``from __future__ import
    annotations`` leaves strings)."""
    try:
        hints = get_type_hints(func)
    except Exception:  # unresolvable forward references: treat as untyped
        return {}
    hints.pop("return", None)
    return hints


def dynamo_endpoint(name: Optional[str] = None) -> Callable[[F], F]:
    """Serve this method as a dynamo endpoint (``@dynamo_endpoint()``)."""
    if callable(name):  # used bare: @dynamo_endpoint
        func = name
        func.__dynamo_endpoint__ = EndpointSpec(func, func.__name__, "endpoint")  # type: ignore[attr-defined]
        return func  # type: ignore[return-value]

    def mark(func: F) -> F:
        func.__dynamo_endpoint__ = EndpointSpec(func, name or func.__name__, "endpoint")  # type: ignore[attr-defined]
        return func
    return mark


def endpoint(name: Optional[str] = None, is_api: bool = False,
             http_method: Optional[str] = None) -> Callable[[F], F]:
    """NVIDIA Dynamo 0.3's name for ``dynamo_endpoint``; ``is_api=True``
    serves the method over HTTP instead, as ``@api`` does."""
    if callable(name):  # used bare: @endpoint
        return dynamo_endpoint(name)  # type: ignore[return-value]
    if http_method is not None and not is_api:
        raise ValueError("@endpoint: http_method is only for is_api=True")
    if is_api:
        return api(name=name, method=http_method or "POST")  # type: ignore[no-any-return]
    return dynamo_endpoint(name)


def api(func: Optional[F] = None, *, route: Optional[str] = None, method: str = "POST",
        name: Optional[str] = None) -> Any:
    """Serve this method over HTTP: a JSON body becomes its arguments; an async
    generator streams Server-Sent Events; a coroutine returns one JSON
    document, or a response object (Starlette's StreamingResponse or
    Response) whose body, media type and status go out as they are.
    ``@api``, ``@api()`` or ``@api(route="/x")``."""
    def mark(f: F) -> F:
        n = name or f.__name__
        f.__dynamo_api__ = EndpointSpec(f, n, "api", method.upper(), route)  # type: ignore[attr-defined]
        return f
    return mark(func) if func is not None else mark


def async_on_start(func: F) -> F:
    """Run after __init__, before the service serves; several run in the
    order the class defines them. An ``async def`` is awaited, a plain
    ``def`` is called."""
    _hook(func, "async_on_start")
    func.__dynamo_on_start__ = True  # type: ignore[attr-defined]
    return func


def async_on_shutdown(func: F) -> F:
    """Awaited on Ctrl-C / SIGTERM, once requests have drained, before the
    worker exits."""
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"{func.__qualname__}: @async_on_shutdown needs an `async def` "
                        "(use @on_shutdown for a plain def)")
    func.__dynamo_on_shutdown__ = True  # type: ignore[attr-defined]
    return func


def on_shutdown(func: F) -> F:
    """Called at shutdown, as @async_on_shutdown hooks are (in definition
    order with them); for a plain ``def`` (an ``async def`` is awaited)."""
    _hook(func, "on_shutdown")
    func.__dynamo_on_shutdown__ = True  # type: ignore[attr-defined]
    return func


def _hook(func: Any, what: str) -> None:
    if not callable(func):
        raise TypeError(f"@{what} decorates a method, not {func!r}")


async def run_hook(method: Callable[[], Any]) -> None:
    """Call a bound hook; await what it returns when that is awaitable."""
    result = method()
    if inspect.isawaitable(result):
        await result

"""Method decorators: endpoints, HTTP routes and lifecycle hooks.

They only mark methods; the worker (dynamo.sdk.worker) finds the marks on
the class and serves them. An endpoint's request type comes from the
annotation of its first parameter after ``self``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, TypeVar, get_type_hints

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
        self.request_type = _first_param_type(func)
        self.params = [p for p in inspect.signature(func).parameters.values()][1:]

    def __repr__(self) -> str:
        return f"<{self.kind} {self.name}{' (streaming)' if self.streaming else ''}>"


def _first_param_type(func: Callable[..., Any]) -> Any:
    params = list(inspect.signature(func).parameters.values())[1:]
    if not params:
        return None
    try:
        hints = get_type_hints(func)
    except Exception:  # unresolvable forward references: treat as untyped
        hints = {}
    return hints.get(params[0].name, None)


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


def api(func: Optional[F] = None, *, route: Optional[str] = None, method: str = "POST",
        name: Optional[str] = None) -> Any:
    """Serve this method over HTTP: a JSON body becomes its arguments; an async
    generator streams Server-Sent Events. ``@api`` or ``@api(route="/x")``."""
    def mark(f: F) -> F:
        n = name or f.__name__
        f.__dynamo_api__ = EndpointSpec(f, n, "api", method.upper(), route)  # type: ignore[attr-defined]
        return f
    return mark(func) if func is not None else mark


def async_on_start(func: F) -> F:
    """Awaited after __init__, before the service serves."""
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"{func.__qualname__}: @async_on_start needs an `async def`")
    func.__dynamo_on_start__ = True  # type: ignore[attr-defined]
    return func


def async_on_shutdown(func: F) -> F:
    """Awaited on Ctrl-C / SIGTERM before the worker exits."""
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"{func.__qualname__}: @async_on_shutdown needs an `async def`")
    func.__dynamo_on_shutdown__ = True  # type: ignore[attr-defined]
    return func

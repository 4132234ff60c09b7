"""HTTP for ``@api`` methods, on the C HTTP server in the worker's loop.

A POST's JSON body becomes the handler's arguments: an object's keys name
parameters (``async def generate(self, text: str)`` takes
``{"text": "..."}``), or, for a single parameter typed with a pydantic model
or a dataclass, the whole body is that object. A coroutine answers with one
JSON document; an async generator streams Server-Sent Events, one
``data: <json>`` event per item. A coroutine may also return a response
object, as FastAPI handlers do: one with a ``body_iterator`` (Starlette's
StreamingResponse) streams its chunks as they come, with its media type and
status; one with a ``body`` (Starlette's Response) is sent as is. Such
objects are recognised by those attributes, so FastAPI is never imported.
A client that disconnects cancels the handler, and with it every dynamo
stream it was reading; so does the service's traffic timeout (504 when
nothing was sent yet).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from typing import Any, Dict

from dynamo.runtime import DistributedRuntime
from dynamo.sdk.codec import _is_pydantic, decode, encode
from dynamo.sdk.decorators import EndpointSpec
from dynamo.sdk.service import DynamoService

DEFAULT_PORT = 8000


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and (dataclasses.is_dataclass(t) or _is_pydantic(t))


def _arguments(spec: EndpointSpec, body: bytes) -> Dict[str, Any]:
    params = spec.params
    if not params:
        return {}
    try:
        value = json.loads(body) if body.strip() else {}
    except ValueError as e:
        raise HttpError(400, f"request body is not JSON: {e}") from None
    if len(params) == 1 and _is_model(spec.request_type):
        try:
            return {params[0].name: decode(body, spec.request_type)}
        except Exception as e:
            raise HttpError(400, f"invalid request: {_why(e)}") from None
    if not isinstance(value, dict):
        raise HttpError(400, "request body must be a JSON object")
    names = {p.name for p in params}
    unknown = sorted(set(value) - names)
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(unknown)}")
    missing = [p.name for p in params if p.default is p.empty and p.name not in value]
    if missing:
        raise HttpError(400, f"missing field(s): {', '.join(missing)}")
    return value


def _why(e: Exception) -> str:
    """A validation error as one line naming each field that did not fit
    (pydantic's errors() list), else the exception's own text."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            parts = [f"field '{'.'.join(str(x) for x in err.get('loc', ())) or '(body)'}': "
                     f"{err.get('msg', 'invalid')}" for err in errors()]
            if parts:
                return "; ".join(parts)
        except Exception:
            pass
    return f"{type(e).__name__}: {e}"


def _content_type(resp: Any) -> str:
    """A response object's media type, with a charset for text as Starlette
    sends it."""
    media = getattr(resp, "media_type", None) or "application/octet-stream"
    charset = getattr(resp, "charset", None) or "utf-8"
    if media.startswith("text/") and "charset=" not in media:
        media += f"; charset={charset}"
    return media


def _chunk(resp: Any, chunk: Any) -> bytes:
    if isinstance(chunk, str):
        return chunk.encode(getattr(resp, "charset", None) or "utf-8")
    return bytes(chunk)


class ApiServer:
    def __init__(self, rt: DistributedRuntime, svc: DynamoService, obj: Any,
                 host: str, port: int, limits: Dict[str, int]):
        self._rt = rt
        self._timeout = svc.timeout
        self._obj = obj
        self._loop = asyncio.get_running_loop()
        self._server = rt._core.http_server(host, port)
        try:
            self._server.set_limits(limits)
        except ValueError as e:
            self._server.stop()
            raise ValueError(f"config of {svc.name}: {e}") from None
        self.port = self._server.port
        self._tasks: set = set()
        self._draining = False
        for spec in svc.apis.values():
            self._server.route(spec.method, spec.path, self._handler(spec))
        # libuv adds the listener to its epoll set on its next pass; until
        # then asyncio would never see it readable.
        rt.kick()

    def _handler(self, spec: EndpointSpec) -> Any:
        method = getattr(self._obj, spec.func.__name__)

        def on_request(req: Any) -> None:
            if self._draining:
                req.error(503, "the server is shutting down")
                self._rt.kick()
                return
            state = {"timed_out": False}
            task = self._loop.create_task(self._serve(spec, method, req, state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            req.on_close = task.cancel
            if self._timeout is not None:
                def expire() -> None:
                    state["timed_out"] = True
                    task.cancel()
                timer = self._loop.call_later(self._timeout, expire)
                task.add_done_callback(lambda _: timer.cancel())

        return on_request

    async def _serve(self, spec: EndpointSpec, method: Any, req: Any,
                     state: Dict[str, bool]) -> None:
        started = False
        try:
            kwargs = _arguments(spec, req.body())
            if not spec.streaming:
                result = await method(**kwargs)
                if hasattr(result, "body_iterator"):  # a StreamingResponse
                    req.start(int(getattr(result, "status_code", 200)), _content_type(result))
                    started = True
                    self._rt.kick()
                    await self._stream_body(req, result)
                    req.finish()
                elif hasattr(result, "body") and hasattr(result, "status_code"):  # a Response
                    req.respond(int(result.status_code), _content_type(result), _chunk(result, result.body))
                else:
                    req.respond(200, "application/json", encode(result))
            else:
                req.start(200, "text/event-stream")
                started = True
                self._rt.kick()
                async for item in method(**kwargs):
                    if not req.sse(encode(item)):
                        break  # the client left
                    self._rt.kick()
                req.finish()
        except asyncio.CancelledError:
            if started:
                req.finish()
            elif state["timed_out"]:
                req.error(504, f"the request took longer than the service's timeout ({self._timeout:g} s)")
            else:
                req.error(499, "client closed the request")
        except HttpError as e:
            req.error(e.status, str(e))
        except Exception as e:
            if started:  # headers are out: report in-band, then end
                req.sse(json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
                req.finish()
            else:
                req.error(500, f"{type(e).__name__}: {e}")
        finally:
            self._rt.kick()

    async def _stream_body(self, req: Any, resp: Any) -> None:
        """A response object's chunks, each written as it comes (a sync
        iterator too, though Starlette always hands over an async one)."""
        body = resp.body_iterator
        if hasattr(body, "__aiter__"):
            try:
                async for chunk in body:
                    if not req.write(_chunk(resp, chunk)):
                        break  # the client left
                    self._rt.kick()
            finally:
                close = getattr(body, "aclose", None)
                if close is not None:
                    await close()
        else:
            for chunk in body:
                if not req.write(_chunk(resp, chunk)):
                    break
                self._rt.kick()

    async def drain(self, deadline: float) -> None:
        """Refuse new requests (503), let the ones in flight finish until
        deadline (a loop.time()), then stop: a SIGTERM must not cut off the
        streams being served."""
        self._draining = True
        while self._tasks and self._loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - self._loop.time())
        self.stop()

    def stop(self) -> None:
        self._server.stop()
        self._rt.kick()


async def serve_apis(rt: DistributedRuntime, svc: DynamoService, obj: Any,
                     section: Dict[str, Any]) -> ApiServer:
    port = int(os.environ.get("DYN_HTTP_PORT") or section.get("port") or svc.http_port or DEFAULT_PORT)
    host = str(section.get("host", "0.0.0.0"))
    # The HTTP server's limits (docs/limits.md): the section's http_* keys;
    # a key that is not one, or a bad value, is an error naming it.
    limits = {k: v for k, v in section.items() if k.startswith("http_")}
    return ApiServer(rt, svc, obj, host, port, limits)

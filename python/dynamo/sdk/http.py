"""HTTP for ``@api`` methods, on the C HTTP server in the worker's loop.

A POST's JSON body becomes the handler's arguments: an object's keys name
parameters (``async def generate(self, text: str)`` takes
``{"text": "..."}``), or, for a single parameter typed with a pydantic model
or a dataclass, the whole body is that object. Arguments are checked
against the parameters' types first (dynamo.sdk.validate): a body that does
not fit is a 400 naming the field. A coroutine answers with one JSON
document; an async generator streams Server-Sent Events, one
``data: <json>`` event per item, the 200 going out with the first one. A coroutine may also return a response
object, as FastAPI handlers do: one with a ``body_iterator`` (Starlette's
StreamingResponse) streams its chunks as they come, with its media type and
status; one with a ``body`` (Starlette's Response) is sent as is. Such
objects are recognised by those attributes, so FastAPI is never imported.
A client that disconnects cancels the handler, and with it every dynamo
stream it was reading; so does the service's traffic timeout, and the end
of the drain at shutdown. A request that fails gets an HTTP error (504, 503,
500 ...) when nothing was sent yet; a started event stream gets an error
event (``{"error": {"message", "type", "code"}}``, the shape of an HTTP
error body) and then its proper end. What a failure says to the client is
its kind only; its text, which may name internal addresses, is logged.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from typing import Any, Dict, Tuple

from dynamo import _core
from dynamo.runtime import DistributedRuntime, DynamoError
from dynamo.sdk import validate
from dynamo.sdk.codec import encode
from dynamo.sdk.config import http_address
from dynamo.sdk.decorators import EndpointSpec
from dynamo.sdk.service import DynamoService

DEFAULT_PORT = 8000
# After the drain deadline, how long cancelled requests get to write their end.
STOP_WAIT_S = 1.0


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _arguments(spec: EndpointSpec, body: bytes) -> Dict[str, Any]:
    """The handler's keyword arguments, checked against its parameter types
    (dynamo.sdk.validate); every way a body can be wrong is a 400."""
    if not spec.params:
        return {}
    try:
        value = json.loads(body) if body.strip() else {}
    except RecursionError:
        raise HttpError(400, "request body is nested too deeply") from None
    except ValueError as e:
        raise HttpError(400, f"request body is not JSON: {e}") from None
    try:
        return validate.arguments(spec.params, spec.hints, value)
    except validate.Invalid as e:
        raise HttpError(400, f"invalid request: {e}") from None
    except RecursionError:  # a model's validator walking a deep value
        raise HttpError(400, "request body is nested too deeply") from None


def _failure(e: Exception) -> Tuple[int, str]:
    """What an HTTP client is told about a failed handler: the kind of
    failure, never its text, which may hold internal addresses ("instance
    ... at 10.0.0.7:44063 disconnected") or data; the text goes to the log."""
    if isinstance(e, DynamoError) and e.args and isinstance(e.args[0], int):
        status = e.args[0]
        http = (503 if status in (_core.ENOINSTANCE, _core.ECONNECT, _core.ECLOSED)
                else 504 if status == _core.ETIMEDOUT else 500)
        return http, f"an upstream call failed: {_core.strerror(status)}"
    return 500, f"the handler failed ({type(e).__name__})"


def _error_event(status: int, message: str) -> bytes:
    """The body of an error as an SSE event, in the shape of an HTTP error
    body (src/http) and of the LLM Frontend's error events."""
    return json.dumps({"error": {"message": message, "type": _core.http_error_type(status),
                                 "code": status}}).encode()


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
        self._name = svc.name
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
        self._draining = False  # new requests get 503
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
        # What went out: None (nothing), else the media type of a started
        # response; a failure after the start can only be reported in-band.
        started: Dict[str, Any] = {"media": None}
        try:
            kwargs = _arguments(spec, req.body())
            if not spec.streaming:
                result = await method(**kwargs)
                if hasattr(result, "body_iterator"):  # a StreamingResponse
                    media = _content_type(result)
                    req.start(int(getattr(result, "status_code", 200)), media)
                    started["media"] = media
                    self._rt.kick()
                    await self._stream_body(req, result)
                    req.finish()
                elif hasattr(result, "body") and hasattr(result, "status_code"):  # a Response
                    req.respond(int(result.status_code), _content_type(result), _chunk(result, result.body))
                else:
                    req.respond(200, "application/json", encode(result))
            else:
                # The 200 goes out with the first item, so that a handler
                # (or the service it calls) failing before it has anything
                # to say is an ordinary HTTP error, not a 200 and an event.
                async for item in method(**kwargs):
                    if started["media"] is None:
                        req.start(200, "text/event-stream")
                        started["media"] = "text/event-stream"
                    if not req.sse(encode(item)):
                        break  # the client left
                    self._rt.kick()
                if started["media"] is None:
                    req.start(200, "text/event-stream")
                req.finish()
        except asyncio.CancelledError:
            if req.closed:
                req.finish()  # the client left: nobody to tell
            elif state["timed_out"]:
                self._fail(req, started["media"], 504,
                           f"the request took longer than the service's timeout ({self._timeout:g} s)")
            else:
                self._fail(req, started["media"], 503, "the server is shutting down")
        except HttpError as e:
            self._fail(req, started["media"], e.status, str(e))
        except Exception as e:
            status, message = _failure(e)
            what = f"{self._name}: {spec.method} {spec.path}: {type(e).__name__}: {e}"
            if isinstance(e, DynamoError):
                print(what, file=sys.stderr, flush=True)
            else:  # the application's own bug: its traceback helps
                print(what + "\n" + "".join(traceback.format_exception(e)).rstrip(),
                      file=sys.stderr, flush=True)
            self._fail(req, started["media"], status, message)
        finally:
            self._rt.kick()

    @staticmethod
    def _fail(req: Any, media: Any, status: int, message: str) -> None:
        """Ends a failed request: an HTTP error when nothing went out yet;
        else, on an event stream, an error event and then the stream's
        proper end (other media types cannot carry an error in-band, so
        they just end)."""
        if media is None:
            req.error(status, message)
            return
        if media.startswith("text/event-stream"):
            req.sse(_error_event(status, message))
        req.finish()

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
        deadline (a loop.time()), then cancel what is left, each ending
        with an error its client can see (503, or an error event and the
        stream's proper end), and stop: a SIGTERM must neither cut off the
        streams being served nor leave a client with half a response."""
        self._draining = True
        while self._tasks and self._loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=deadline - self._loop.time())
        if self._tasks:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.wait(set(self._tasks), timeout=STOP_WAIT_S)
        self.stop()

    def stop(self) -> None:
        self._server.stop()
        self._rt.kick()


async def serve_apis(rt: DistributedRuntime, svc: DynamoService, obj: Any,
                     config: Dict[str, Any]) -> ApiServer:
    """Serves svc's @api routes on its configured host and port ($DYN_HTTP_PORT,
    which `dynamo serve` sets from the plan, wins), with the HTTP server's
    limits from the section's http_* keys (docs/limits.md; a key that is not
    one, or a bad value, is an error naming it). Raises ConfigError."""
    host, port = http_address(config, svc.name, svc.http_port or DEFAULT_PORT)
    env_port = os.environ.get("DYN_HTTP_PORT")
    if env_port:
        port = int(env_port)
    section = config.get(svc.name, {}) or {}
    limits = {k: v for k, v in section.items() if k.startswith("http_")}
    return ApiServer(rt, svc, obj, host, port, limits)

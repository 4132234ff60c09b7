"""The hello-world 3-hop graph (Frontend -> Middle -> Backend) for BentoML.

Same logic and HTTP contract as examples/hello_world/hello_world.py:

    POST /generate {"text": "hello world"}
    -> data: "Frontend: Middle: Backend: hello"\\n\\n
       data: "Frontend: Middle: Backend: world-mid-back"\\n\\n

BentoML >= 1.2 new-style API: one @bentoml.service class per hop, wired with
bentoml.depends(); `bentoml serve` runs each service in its own process
(workers=1 each, like `dynamo serve --Backend.ServiceArgs.workers=1`), and a
dependency call goes over HTTP to the dependency's process. The endpoints are
async generators, so the stream is relayed hop by hop: Middle iterates
Backend's stream and Frontend iterates Middle's, each as it arrives.

BentoML streams an async generator's str chunks as they are yielded (a
chunked HTTP response), but the stream a dependency call returns is a text
stream without message boundaries: two messages yielded back to back by
Backend can arrive at Middle as one chunk ("Backend: helloBackend: world...").
So each hop ends its messages with a newline and the caller splits the
stream into lines (`_lines`), the closest equivalent of dynamo's framed
responses. Frontend yields Server-Sent-Events lines itself so the bytes on
the wire match dynamo's.

    cd bench/pipeline && bentoml serve bentoml_graph:Frontend --port 3000

Two settings differ from BentoML's defaults:

- Per-request access logging is off (dynamo writes none); BENCH_ACCESS_LOG=1
  keeps BentoML's default (on).
- runner_connection.max_requests is raised from 100 to 2**31-1. Since
  BentoML 1.4.31 (PR bentoml/BentoML#5522) the client a service uses for a
  dependency replaces its aiohttp session every max_requests calls and closes
  the old one, which aborts the calls still in flight on it
  ("Server disconnected", "Cannot write to closing transport"); at 16
  concurrent requests one request in five or six failed with HTTP 500.
  BENCH_BENTOML_DEFAULT_CONN=1 keeps the default to see it.
"""

from __future__ import annotations

import json
import os
import typing as t

import bentoml

_cfg: dict = {"workers": 1}
if os.environ.get("BENCH_ACCESS_LOG") != "1":
    _cfg["logging"] = {"access": {"enabled": False}}
if os.environ.get("BENCH_BENTOML_DEFAULT_CONN") != "1":
    _cfg["runner_connection"] = {"max_requests": 2**31 - 1}


async def _lines(stream: t.AsyncIterator[str]) -> t.AsyncIterator[str]:
    """Newline-framed messages out of a dependency's text stream."""
    buf = ""
    async for chunk in stream:
        buf += chunk
        while True:
            i = buf.find("\n")
            if i < 0:
                break
            yield buf[:i]
            buf = buf[i + 1 :]
    if buf:
        yield buf


@bentoml.service(**_cfg)
class Backend:
    message = "back"

    @bentoml.api
    async def generate(self, text: str) -> t.AsyncGenerator[str, None]:
        for word in f"{text}-{self.message}".split():
            yield f"Backend: {word}\n"


@bentoml.service(**_cfg)
class Middle:
    backend = bentoml.depends(Backend)
    message = "mid"

    @bentoml.api
    async def generate(self, text: str) -> t.AsyncGenerator[str, None]:
        async for response in _lines(self.backend.generate(text=f"{text}-{self.message}")):
            yield f"Middle: {response}\n"


@bentoml.service(**_cfg)
class Frontend:
    middle = bentoml.depends(Middle)

    @bentoml.api
    async def generate(self, text: str) -> t.AsyncGenerator[str, None]:
        async for response in _lines(self.middle.generate(text=text)):
            yield f"data: {json.dumps(f'Frontend: {response}')}\n\n"

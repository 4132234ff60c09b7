"""The hello-world 3-hop graph (Frontend -> Middle -> Backend) for Ray Serve.

Same logic and HTTP contract as examples/hello_world/hello_world.py:

    POST /generate {"text": "hello world"}
    -> data: "Frontend: Middle: Backend: hello"\\n\\n
       data: "Frontend: Middle: Backend: world-mid-back"\\n\\n

One deployment per hop, one replica each, composed with handles:
app = Frontend.bind(Middle.bind(Backend.bind())). Middle and Frontend call
the next hop through a DeploymentHandle with .options(stream=True), so each
message is relayed as it is yielded (a DeploymentResponseGenerator, iterated
with `async for`); Frontend answers HTTP with a Starlette StreamingResponse
of Server-Sent-Events lines, the same bytes as dynamo's.

The HTTP request reaches Frontend through Ray Serve's proxy actor, as in
every Ray Serve deployment (client -> proxy -> Frontend -> Middle ->
Backend). The port comes from a Serve config file; run.sh writes one:

    http_options: {host: 127.0.0.1, port: 8000}
    logging_config: {enable_access_log: false}
    applications:
      - {name: default, route_prefix: /, import_path: ray_graph:app}

    cd bench/pipeline && serve run ray-config.yaml

(`serve run ray_graph:app` also works and listens on 8000.)

Settings that differ from Ray Serve's defaults, all in Ray's favour:
max_ongoing_requests is 256 instead of 5 (so a single replica is not capped
below the load generator's concurrency), and ray_actor_options num_cpus is 0
instead of 1 (a logical resource only: three deployments at 1 CPU each do
not fit on a 2-CPU node; it does not limit the CPU a replica uses).
"""

from __future__ import annotations

import json
import typing as t

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import StreamingResponse

_opts = dict(num_replicas=1, max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})


@serve.deployment(**_opts)
class Backend:
    message = "back"

    async def generate(self, text: str) -> t.AsyncGenerator[str, None]:
        for word in f"{text}-{self.message}".split():
            yield f"Backend: {word}"


@serve.deployment(**_opts)
class Middle:
    message = "mid"

    def __init__(self, backend: DeploymentHandle) -> None:
        self.backend = backend.options(stream=True)

    async def generate(self, text: str) -> t.AsyncGenerator[str, None]:
        async for response in self.backend.generate.remote(f"{text}-{self.message}"):
            yield f"Middle: {response}"


@serve.deployment(**_opts)
class Frontend:
    def __init__(self, middle: DeploymentHandle) -> None:
        self.middle = middle.options(stream=True)

    async def _events(self, text: str) -> t.AsyncGenerator[str, None]:
        async for response in self.middle.generate.remote(text):
            yield f"data: {json.dumps(f'Frontend: {response}')}\n\n"

    async def __call__(self, request: Request) -> StreamingResponse:
        body = await request.json()
        return StreamingResponse(self._events(body["text"]), media_type="text/event-stream")


app = Frontend.bind(Middle.bind(Backend.bind()))

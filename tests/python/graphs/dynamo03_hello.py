"""A hello-world graph in NVIDIA Dynamo 0.3's style (our own code, Dynamo's
API): @endpoint(), @api() on a pydantic-typed handler that returns FastAPI's
StreamingResponse, DYNAMO_IMAGE and image=, a resource= option this SDK does
not know (warned about), configure_dynamo_logging, and several start hooks."""

import logging

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from dynamo.runtime.logging import configure_dynamo_logging
from dynamo.sdk import DYNAMO_IMAGE, api, async_on_start, depends, endpoint, service
from dynamo.sdk.lib.config import ServiceConfig
from dynamo.sdk.lib.decorators import async_on_shutdown, on_shutdown

logger = logging.getLogger(__name__)
configure_dynamo_logging()


class RequestType(BaseModel):
    text: str


@service(dynamo={"namespace": "hello03"}, image=DYNAMO_IMAGE, resource={"cpu": 1})
class Backend:
    def __init__(self) -> None:
        self.suffix = ServiceConfig.get_parsed_config("Backend").get("suffix", "back")

    @endpoint()
    async def generate(self, req: RequestType):
        for word in f"{req.text}-{self.suffix}".split():
            yield f"Backend: {word}"


@service(dynamo={"namespace": "hello03"}, image=DYNAMO_IMAGE)
class Middle:
    backend = depends(Backend)

    @endpoint()
    async def generate(self, req: RequestType):
        onward = RequestType(text=f"{req.text}-mid")
        async for answer in self.backend.generate(onward.model_dump_json()):
            yield f"Middle: {answer}"


@service(dynamo={"namespace": "hello03"}, image="registry.example/hello03:1")
class Frontend:
    middle = depends(Middle)

    def __init__(self) -> None:
        self.started = []

    @async_on_start
    async def first(self) -> None:
        self.started.append("first")

    @async_on_start
    def second(self) -> None:  # a plain def works too
        self.started.append("second")

    @async_on_start
    async def third(self) -> None:
        self.started.append("third")
        logger.info("Frontend start hooks: %s", ",".join(self.started))
        print("Frontend start hooks: " + ",".join(self.started), flush=True)

    @on_shutdown
    def closing(self) -> None:
        print("Frontend on_shutdown ran", flush=True)

    @async_on_shutdown
    async def closing_async(self) -> None:
        print("Frontend async_on_shutdown ran", flush=True)

    @api()
    async def generate(self, request: RequestType):
        async def content():
            async for answer in self.middle.generate(request.model_dump_json()):
                yield f"Frontend: {answer}\n"
        return StreamingResponse(content(), media_type="text/plain", status_code=201)

"""A hello-world graph written the way NVIDIA Dynamo 0.1 wrote them (our own
code, Dynamo's API): Frontend (@api) -> Middle -> Backend, pydantic
requests, traffic timeouts, ServiceConfig from dynamo.sdk.lib.config, and a
Middle that passes model_dump_json() strings on."""

from pydantic import BaseModel

from dynamo.sdk import api, depends, dynamo_endpoint, service
from dynamo.sdk.lib.config import ServiceConfig


class RequestType(BaseModel):
    text: str


class ResponseType(BaseModel):
    text: str


@service(dynamo={"enabled": True, "namespace": "hello01"}, resources={"cpu": "1"},
         traffic={"timeout": 30}, workers=1)
class Backend:
    def __init__(self) -> None:
        self.suffix = ServiceConfig.get_instance().get("Backend", {}).get("suffix", "back")

    @dynamo_endpoint()
    async def generate(self, req: RequestType):
        for word in f"{req.text}-{self.suffix}".split():
            yield f"Backend: {word}"


@service(dynamo={"enabled": True, "namespace": "hello01"}, traffic={"timeout": 30})
class Middle:
    backend = depends(Backend)

    def __init__(self) -> None:
        self.suffix = ServiceConfig.get_instance().get("Middle", {}).get("suffix", "mid")

    @dynamo_endpoint()
    async def generate(self, req: RequestType):
        onward = RequestType(text=f"{req.text}-{self.suffix}").model_dump_json()
        async for answer in self.backend.generate(onward):
            yield f"Middle: {answer}"


@service(traffic={"timeout": 30})
class Frontend:
    middle = depends(Middle)

    @api
    async def generate(self, text):
        async for answer in self.middle.generate(RequestType(text=text).model_dump_json()):
            yield f"Frontend: {answer}"

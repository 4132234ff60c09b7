"""A Python Middle whose Backend is the C service from examples/hello_world_c."""

import os

from pydantic import BaseModel

from dynamo.sdk import c_service, depends, dynamo_endpoint, service

BUILD = os.environ.get("DYN_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "..", "build"))
Backend = c_service(os.path.join(BUILD, "examples/hello_world_c/libhello_services.so"), "Backend",
                    namespace="hello", endpoints={"generate": True})


class RequestType(BaseModel):
    text: str


@service(dynamo={"namespace": "hello"})
class Middle:
    backend = depends(Backend)

    @dynamo_endpoint()
    async def generate(self, req: RequestType):
        async for word in self.backend.generate(RequestType(text=f"{req.text}-mid")):
            yield f"Middle: {word}"

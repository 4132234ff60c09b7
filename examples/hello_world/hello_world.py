"""Hello world: Frontend (HTTP) -> Middle -> Backend.

    dynamo serve examples/hello_world/hello_world.py:Frontend -f examples/hello_world/config.yaml
    curl -N -X POST localhost:8000/generate -H 'content-type: application/json' -d '{"text": "hello world"}'

Backend appends "-back" and streams one message per word; Middle appends
"-mid" before calling Backend and prefixes what it relays; Frontend relays.
"""

from pydantic import BaseModel

from dynamo.sdk import ServiceConfig, api, async_on_shutdown, async_on_start, depends, dynamo_endpoint, service


class RequestType(BaseModel):
    text: str


@service(dynamo={"enabled": True, "namespace": "hello"})
class Backend:
    def __init__(self) -> None:
        config = ServiceConfig.get_instance()
        self.message = config.get("Backend", {}).get("message", "back")

    @dynamo_endpoint()
    async def generate(self, req: RequestType):
        text = f"{req.text}-{self.message}"
        for word in text.split():
            yield f"Backend: {word}"


@service(dynamo={"enabled": True, "namespace": "hello"})
class Middle:
    backend = depends(Backend)

    def __init__(self) -> None:
        config = ServiceConfig.get_instance()
        self.message = config.get("Middle", {}).get("message", "mid")

    @dynamo_endpoint()
    async def generate(self, req: RequestType):
        async for response in self.backend.generate(RequestType(text=f"{req.text}-{self.message}")):
            yield f"Middle: {response}"


@service(dynamo={"enabled": True, "namespace": "hello"}, resources={"cpu": "1", "memory": "1Gi"})
class Frontend:
    middle = depends(Middle)

    @async_on_start
    async def started(self) -> None:
        print("Frontend: started")

    @async_on_shutdown
    async def stopped(self) -> None:
        print("Frontend: shut down")

    @api
    async def generate(self, text: str):
        async for response in self.middle.generate(RequestType(text=text)):
            yield f"Frontend: {response}"

"""The seed document's ServiceA / ServiceB example, unchanged but for a
stand-in engine (no model weights here). Hooks leave marks in $MARK_DIR."""

import os

from pydantic import BaseModel

from dynamo.sdk import async_on_shutdown, async_on_start, depends, dynamo_endpoint, service


class ChatCompletionRequest(BaseModel):
    model: str = "stand-in"
    prompt: str


class _StandInEngine:
    def __init__(self, model_name):
        self.model_name = model_name

    async def generate(self, processed):
        return {"model": self.model_name, "completion": processed["prompt"].upper()}

    async def shutdown(self):
        _mark("engine_shutdown")


def _mark(name):
    d = os.environ.get("MARK_DIR")
    if d:
        with open(os.path.join(d, name), "a") as f:
            f.write(f"{os.getpid()}\n")


async def initialize_model_engine(model_name):
    _mark("engine_started")
    return _StandInEngine(model_name)


@service(dynamo={"enabled": True, "namespace": "dynamo"})
class ServiceB:
    @dynamo_endpoint()
    async def preprocess(self, request: ChatCompletionRequest):
        return {"prompt": request.prompt.strip(), "model": request.model}


@service(dynamo={"enabled": True, "namespace": "dynamo"}, resources={"gpu": 1})
class ServiceA:
    # Define service dependencies
    service_b = depends(ServiceB)

    def __init__(self, model_name="meta-llama/Llama-3.1-8B-Instruct"):
        self.model_name = model_name
        self.engine = None

    @async_on_start
    async def async_init(self):
        # Initialize resources that require async operations
        self.engine = await initialize_model_engine(self.model_name)
        print(f"ServiceA initialized with model: {self.model_name}")

    @async_on_shutdown
    async def async_shutdown(self):
        # Clean up resources
        if self.engine:
            await self.engine.shutdown()
            print("ServiceA engine shut down")

    @dynamo_endpoint()
    async def generate(self, request: ChatCompletionRequest):
        # Call dependent service
        processed_request = await self.service_b.preprocess(request)

        # Use the engine to generate a response
        response = await self.engine.generate(processed_request)
        return response

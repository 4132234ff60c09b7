"""NVIDIA Dynamo's ``dynamo.sdk.lib.decorators``: the same decorators as
``dynamo.sdk``."""

from dynamo.sdk.decorators import (api, async_on_shutdown, async_on_start, dynamo_endpoint,
                                   endpoint, on_shutdown)

__all__ = ["api", "async_on_shutdown", "async_on_start", "dynamo_endpoint", "endpoint",
           "on_shutdown"]

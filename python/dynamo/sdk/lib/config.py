"""``from dynamo.sdk.lib.config import ServiceConfig`` (NVIDIA Dynamo's path)."""

from dynamo.sdk.config import ServiceConfig

__all__ = ["ServiceConfig"]

"""NVIDIA Dynamo's ``dynamo.sdk.lib.dependency``: ``depends`` as in ``dynamo.sdk``."""

from dynamo.sdk.dependency import depends

__all__ = ["depends"]

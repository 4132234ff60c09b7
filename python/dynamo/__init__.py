"""dynamo: distributed inference serving with a C core.

``dynamo.runtime`` is the distributed runtime (a thin layer over the C
extension ``dynamo._core``); ``dynamo.sdk`` is the service SDK.
"""

__version__ = "0.1.0"

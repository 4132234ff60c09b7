"""``dynamo_context``: what a running worker knows about itself.

A plain dict filled by the worker before ``__init__``: ``runtime`` (the
DistributedRuntime), ``service`` (the service name), ``namespace``,
``worker_index``, ``instance_id`` and ``endpoints``.
"""

from typing import Any, Dict

dynamo_context: Dict[str, Any] = {}

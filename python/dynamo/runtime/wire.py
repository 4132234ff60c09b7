"""JSON on the wire: how Python values travel between services.

Every SDK (Python or C) speaks JSON, so services interoperate. ``encode``
turns a value into the bytes of one request or response: bytes pass
through untouched (a caller that speaks bytes gets bytes), pydantic models
and dataclasses become their JSON object, anything else goes through
``json.dumps``. ``decode_request`` is what a handler that takes Python
objects receives: the JSON value of the body, or the body itself when it is
not JSON (a byte payload someone sent on purpose).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any


def _plain(value: Any) -> Any:
    """json.dumps' fallback: pydantic models (2's model_dump or 1's dict)
    and dataclass instances; anything else is a TypeError naming its type."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    legacy = getattr(value, "dict", None)  # pydantic 1
    if callable(legacy) and hasattr(value, "__fields__"):
        return legacy()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def encode(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return json.dumps(value, separators=(",", ":"), default=_plain).encode()


def decode_request(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # not JSON (or not UTF-8): the caller sent bytes
        return body

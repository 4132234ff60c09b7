"""JSON on the wire: what an endpoint receives and what it returns.

Every SDK (Python or C) sends JSON, so services interoperate. A handler's
first parameter annotation picks how its request is decoded: a pydantic
model (where pydantic is installed), a dataclass, or plain JSON values
(dict, str, list, numbers). Values are encoded as the runtime encodes them
(dynamo.runtime.wire).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from dynamo.runtime.wire import encode  # one encoder for the runtime and the SDK

try:  # pydantic is optional
    from pydantic import BaseModel as _PydanticModel
except Exception:  # pragma: no cover - exercised where pydantic is absent
    _PydanticModel = None  # type: ignore[assignment,misc]


__all__ = ["encode", "decode", "convert"]


def _is_pydantic(t: Any) -> bool:
    return _PydanticModel is not None and isinstance(t, type) and issubclass(t, _PydanticModel)


def decode(data: bytes, typ: Any = None) -> Any:
    return convert(json.loads(data), typ)


def convert(value: Any, typ: Any = None) -> Any:
    """A JSON value as typ (a pydantic model or a dataclass; anything else
    leaves the value as it is)."""
    if typ is None or typ is Any:
        return value
    # Callers often pass an already-serialized model (req.model_dump_json()),
    # which arrives as a JSON string holding the object: unwrap it.
    if isinstance(value, str) and typ is not str and value[:1] in "{[":
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if _is_pydantic(typ):
        validate = getattr(typ, "model_validate", None) or typ.parse_obj
        return validate(value)
    if dataclasses.is_dataclass(typ) and isinstance(value, dict):
        return typ(**value)
    return value

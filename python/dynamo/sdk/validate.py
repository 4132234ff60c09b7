"""An ``@api`` request checked against its handler's parameter types.

The JSON body of an HTTP request is untrusted: before the handler runs (and
so before a stream's ``200`` goes out), each argument must fit its
parameter's annotation, or the client gets a 400 that names the field, as
FastAPI answers with its 422. What is checked: ``str``, ``int`` (not a
bool), ``float`` (an int too), ``bool``, ``None``, ``Any``, ``Optional``
and other unions, ``Literal``, ``list``/``List[X]``, ``tuple``,
``dict``/``Dict[str, X]``, and pydantic models and dataclasses (their
fields, with the path to the field that did not fit). Any other annotation
(``bytes``, a class of the application's) is passed through unchecked, since
JSON cannot spell it anyway.
"""

from __future__ import annotations

import dataclasses
from collections import abc
import inspect
import types
import typing
from typing import Any, Dict, List

from dynamo.sdk.codec import _is_pydantic, convert


class Invalid(ValueError):
    """What did not fit, as one line naming the field (``field 'a.b': ...``)."""


def is_model(t: Any) -> bool:
    return isinstance(t, type) and (dataclasses.is_dataclass(t) or _is_pydantic(t))


def _json_kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _name(t: Any) -> str:
    if t is type(None):
        return "null"
    if typing.get_origin(t) is None and hasattr(t, "__name__"):
        return t.__name__
    return str(t).replace("typing.", "")


def _fail(loc: str, what: str) -> Invalid:
    return Invalid(f"field '{loc}': {what}")


def check(value: Any, t: Any, loc: str) -> Any:
    """value as parameter type t (models built, everything else as it is);
    raises Invalid naming loc, the field's dotted path."""
    if t is Any or t is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if origin is typing.Union or origin is types.UnionType:
        errors = []
        for arm in args:
            try:
                return check(value, arm, loc)
            except Invalid as e:
                errors.append(e)
        # Optional[X] given something that is not null: what was wrong with it as an X.
        real = [e for a, e in zip(args, errors) if a is not type(None)]
        if len(real) == 1 and value is not None:
            raise real[0]
        raise _fail(loc, f"expected {' or '.join(_name(a) for a in args)}, got {_json_kind(value)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise _fail(loc, f"expected one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if origin is typing.Annotated:
        return check(value, args[0], loc)
    if t is type(None) or t is None:
        if value is None:
            return value
        raise _fail(loc, f"expected null, got {_json_kind(value)}")
    if t is bool:
        if isinstance(value, bool):
            return value
        raise _fail(loc, f"expected a boolean, got {_json_kind(value)}")
    if t is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(loc, f"expected an integer, got {_json_kind(value)}")
    if t is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        raise _fail(loc, f"expected a number, got {_json_kind(value)}")
    if t is str:
        if isinstance(value, str):
            return value
        raise _fail(loc, f"expected a string, got {_json_kind(value)}")
    if t in (list, tuple, set, frozenset) or origin in (list, tuple, set, frozenset, abc.Sequence):
        if not isinstance(value, list):
            raise _fail(loc, f"expected an array, got {_json_kind(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _fail(loc, f"expected an array of {len(args)}, got {len(value)} items")
            return [check(v, a, f"{loc}.{i}") for i, (v, a) in enumerate(zip(value, args))]
        item = args[0] if args else Any
        return [check(v, item, f"{loc}.{i}") for i, v in enumerate(value)]
    if t is dict or origin in (dict, abc.Mapping):
        if not isinstance(value, dict):
            raise _fail(loc, f"expected an object, got {_json_kind(value)}")
        item = args[1] if len(args) == 2 else Any
        return {k: check(v, item, f"{loc}.{k}") for k, v in value.items()}
    if is_model(t):
        return model(value, t, loc)
    return value


def model(value: Any, t: type, loc: str = "") -> Any:
    """A pydantic model or dataclass built from a JSON value; loc ("" for
    the whole body) prefixes the fields named in the error."""
    if dataclasses.is_dataclass(t):
        if not isinstance(value, dict):
            raise _fail(loc or "(body)", f"expected an object, got {_json_kind(value)}")
        fields = {f.name: f for f in dataclasses.fields(t) if f.init}
        try:
            hints = typing.get_type_hints(t)
        except Exception:
            hints = {}
        prefix = f"{loc}." if loc else ""
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise _fail(prefix + unknown[0], "unknown field")
        kwargs = {}
        for name, f in fields.items():
            if name in value:
                kwargs[name] = check(value[name], hints.get(name, Any), prefix + name)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _fail(prefix + name, "missing")
        return t(**kwargs)
    try:
        return convert(value, t)
    except Exception as e:
        raise Invalid(_why(e, loc)) from None


def _why(e: Exception, loc: str) -> str:
    """A pydantic validation error as one line naming each field that did
    not fit (its errors() list), else the exception's own text."""
    errors = getattr(e, "errors", None)
    parts: List[str] = []
    if callable(errors):
        try:
            for err in errors():
                path = ".".join([loc] * bool(loc) + [str(x) for x in err.get("loc", ())])
                parts.append(f"field '{path or '(body)'}': {err.get('msg', 'invalid')}")
        except Exception:
            parts = []
    return "; ".join(parts) if parts else f"field '{loc or '(body)'}': {type(e).__name__}: {e}"


def arguments(params: List[inspect.Parameter], hints: Dict[str, Any], value: Any) -> Dict[str, Any]:
    """A JSON body as keyword arguments: a single model-typed parameter
    takes the whole body; otherwise the body is an object whose keys name
    parameters. Raises Invalid."""
    if not params:
        return {}
    first = hints.get(params[0].name, Any)
    if len(params) == 1 and is_model(first):
        return {params[0].name: model(value, first)}
    if not isinstance(value, dict):
        raise Invalid(f"the request body must be a JSON object, not {_json_kind(value)}")
    names = {p.name for p in params}
    unknown = sorted(set(value) - names)
    if unknown:
        raise Invalid(f"unknown field(s): {', '.join(unknown)}")
    missing = [p.name for p in params if p.default is p.empty and p.name not in value]
    if missing:
        raise Invalid(f"missing field(s): {', '.join(missing)}")
    out: Dict[str, Any] = {}
    for p in params:
        if p.name in value:
            out[p.name] = check(value[p.name], hints.get(p.name, Any), p.name)
    return out


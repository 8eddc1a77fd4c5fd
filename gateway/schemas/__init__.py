"""Marshmallow schemas, one module per API surface, applied one way: ``validate(schema, data)``."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from marshmallow import Schema, ValidationError, missing

from ..errors import InvalidRequest

MISSING_MESSAGE = "Missing data for required field."


def validate(schema: Schema, data: Any) -> dict:
    """Load ``data`` with ``schema``; the first error becomes a 400 whose ``param`` names the field."""
    try:
        return _narrowed(schema, data).load(data)
    except ValidationError as err:
        param, message = _first_error(err.messages)
        if message == MISSING_MESSAGE:
            raise InvalidRequest(
                f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
            ) from None
        if message == "Unknown field.":
            raise InvalidRequest(f"Unknown parameter: '{param}'.", param=param, code="unknown_parameter") from None
        if param is None:
            raise InvalidRequest(message) from None
        raise InvalidRequest(f"Invalid value for '{param}': {message}", param=param) from None


def _narrowed(schema: Schema, data: Any) -> Schema:
    """``schema`` cut down to the fields ``data`` has, and those that count when absent (required, defaulted).

    marshmallow visits every declared field on each load, absent or not: a create with two of its 30 fields
    cost 85 µs, mostly on the 28 it does not have. The result and the errors are the same: an absent field
    is left out either way, unknown keys are judged against the same names, and the fields keep their
    declared order, so the first error named is the same.
    """
    if not isinstance(data, dict) or schema.only is not None or schema.exclude or schema.many or schema.partial:
        return schema
    by_key, always = _field_keys(schema)
    wanted = set(always)
    for key in data:
        name = by_key.get(key)
        if name is not None:
            wanted.add(name)
    return _schema_with(schema, frozenset(wanted))


@functools.cache
def _field_keys(schema: Schema) -> tuple[dict[str, str], frozenset[str]]:
    """The declared fields by the key they are read from, in declared order, and those that count when absent.

    Cached per schema object: the views' schemas are made once, at import.
    """
    fields = schema.declared_fields
    by_key = {(f.data_key if f.data_key is not None else name): name for name, f in fields.items()}
    always = frozenset(name for name, f in fields.items() if f.required or f.load_default is not missing)
    return by_key, always


@functools.lru_cache(maxsize=1024)
def _schema_with(schema: Schema, names: frozenset[str]) -> Schema:
    # In declared order: marshmallow orders ``only`` fields as given, and the first error named depends on it.
    return type(schema)(only=tuple(name for name in schema.declared_fields if name in names))


def _first_error(messages: Any, path: str | None = None) -> tuple[str | None, str]:
    """Walk marshmallow's nested error dict down to its first message, building an OpenAI-style path."""
    if isinstance(messages, dict):
        key, value = next(iter(messages.items()))
        if key == "_schema":
            return _first_error(value, path)
        step = f"{path or ''}[{key}]" if isinstance(key, int) else key if path is None else f"{path}.{key}"
        return _first_error(value, step)
    if isinstance(messages, list) and messages:
        first = messages[0]
        if isinstance(first, dict | list):
            return _first_error(first, path)
        return path, str(first)
    return path, str(messages)


# The store serialises with orjson, which writes at most 254 levels of nesting while it reads 1,024: what
# the gateway accepts must be what it can keep. Requests get well under that, leaving room for the levels
# the gateway wraps around them (history inlined into a body, a config's overrides merged into one).
MAX_BODY_DEPTH = 128
MAX_CONFIG_DEPTH = 32


def check_depth(data: Any, raw: bytes | None, limit: int, where: str | None = None) -> None:
    """Raises InvalidRequest naming the top-level field that nests deeper than ``limit`` levels.

    ``raw``, the JSON text, makes the common case free: fewer brackets than the limit cannot nest deeper.
    """
    if raw is not None and raw.count(b"{") + raw.count(b"[") <= limit:
        return
    stack: list[tuple[Any, int, str | None]] = [(data, 1, None)]
    while stack:
        value, depth, top = stack.pop()
        if isinstance(value, dict):
            children: Any = value.items()
        elif isinstance(value, list):
            children = enumerate(value)
        else:
            continue
        if depth > limit:
            param = top if where is None else where if top is None else f"{where}.{top}"
            raise InvalidRequest(
                f"'{param or where or 'body'}' is nested more than {limit} levels deep.",
                param=param,
                code="nested_too_deep",
            )
        for key, child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, top if top is not None else str(key)))


def json_object(raw: bytes, what: str, not_an_object: str) -> dict:
    """``raw`` parsed as a JSON object the store can keep: 400 ``invalid_json`` for anything else, and
    ``nested_too_deep`` for one nested deeper than ``MAX_BODY_DEPTH``. Every door (HTTP bodies, WebSocket
    frames) parses through here, so each endpoint gets the same limit.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{what} is not valid JSON ({exc.msg}).", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest(not_an_object, code="invalid_json")
    check_depth(data, raw, MAX_BODY_DEPTH)
    return data

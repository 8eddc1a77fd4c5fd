"""Marshmallow schemas, one module per API surface, applied one way: ``validate(schema, data)``."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError

from ..errors import InvalidRequest

MISSING_MESSAGE = "Missing data for required field."


def validate(schema: Schema, data: Any) -> dict:
    """Load ``data`` with ``schema``; the first error becomes a 400 whose ``param`` names the field."""
    try:
        return schema.load(data)
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

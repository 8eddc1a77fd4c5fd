"""Strict JSON fields: a number is never taken from a string, nor a boolean from a number."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields

_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array", dict: "an object"}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for kind in (bool, int, float, str, list, dict):
        if isinstance(value, kind):
            return _NAMES[kind].split(" ", 1)[1]
    return type(value).__name__


class Typed(fields.Field):
    """Accepts only values of the given JSON types (bool is never an int here), unchanged."""

    def __init__(self, *types: type, **kwargs: Any):
        super().__init__(**kwargs)
        self.types = types

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        ok = isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types)
        if int in self.types and float not in self.types and isinstance(value, float) and value.is_integer():
            ok = False
        if not ok:
            names = [_NAMES.get(t, t.__name__) for t in self.types if not (t is int and float in self.types)]
            expected = " or ".join(names)
            raise ValidationError(f"expected {expected}, but got {_json_type(value)} instead.")
        return value


def String(**kwargs: Any) -> Typed:
    return Typed(str, **kwargs)


def Boolean(**kwargs: Any) -> Typed:
    return Typed(bool, **kwargs)


def Integer(**kwargs: Any) -> Typed:
    return Typed(int, **kwargs)


def Number(**kwargs: Any) -> Typed:
    return Typed(int, float, **kwargs)


def Object(**kwargs: Any) -> Typed:
    return Typed(dict, **kwargs)

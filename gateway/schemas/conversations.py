"""Schemas of the Conversations API: bodies of create, update and add-items, and the items query strings."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate, validates
from marshmallow import fields as mfields

from . import fields as f
from .responses import InputItemsQuerySchema, _ReadQuery, item_problems

MAX_ITEMS = 20


class _Metadata(mfields.Dict):
    """Up to 16 string pairs: keys up to 64 characters, values up to 512, as the API allows."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, dict) and len(value) > 16:
            raise ValidationError("at most 16 key-value pairs.")
        return super()._deserialize(value, attr, data, **kwargs)


def _metadata(**kwargs: Any) -> mfields.Dict:
    return _Metadata(
        keys=f.String(validate=validate.Length(max=64)),
        values=f.String(validate=validate.Length(max=512)),
        allow_none=True,
        **kwargs,
    )


class _Items(Schema):
    """Unknown fields are refused: these endpoints are the gateway's own, and a typo must not pass silently."""

    class Meta:
        unknown = RAISE

    @validates("items")
    def _items(self, value: Any, **kwargs: Any) -> None:
        if value is None:
            return
        if len(value) > MAX_ITEMS:
            raise ValidationError(f"at most {MAX_ITEMS} items at a time.")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise ValidationError({i: ["expected an object (an item)."]})
            if problems := item_problems(item):
                raise ValidationError({i: problems})


class CreateConversationSchema(_Items):
    """``POST /v1/conversations``."""

    items = f.Typed(list, allow_none=True)
    metadata = _metadata()


class UpdateConversationSchema(Schema):
    """``POST /v1/conversations/{id}``: the new metadata."""

    class Meta:
        unknown = RAISE

    metadata = _metadata(required=True)


class AddItemsSchema(_Items):
    """``POST /v1/conversations/{id}/items``."""

    items = f.Typed(list, required=True, validate=validate.Length(min=1, error="at least one item."))
    include = mfields.List(f.String())


class ItemsQuerySchema(InputItemsQuerySchema):
    """``GET /v1/conversations/{id}/items``: as a response's input_items."""


class ItemQuerySchema(_ReadQuery):
    """``GET /v1/conversations/{id}/items/{item_id}``."""

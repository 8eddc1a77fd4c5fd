"""Schemas of the Responses API: the create body and the query strings of the read endpoints."""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, validate, validates, validates_schema
from marshmallow import fields as mfields

from . import fields as f
from .prompts import prompt_problems

_NULLABLE = {"allow_none": True}
# What the store's columns can hold: ids of at most 128 characters (model names 256), none with a NUL
# (PostgreSQL's text refuses one). Checked here, before a provider is paid for an answer it could not keep.
_ID_MAX = 128


def _storable(value: str, limit: int = _ID_MAX) -> str | None:
    """Why ``value`` cannot be kept as an id or a model name, or None."""
    if "\x00" in value:
        return "must not contain a NUL character."
    if len(value) > limit:
        return f"must be at most {limit} characters."
    return None


def item_problems(item: dict) -> dict | None:
    """What is wrong with an input or conversation item's own fields, by field; None when nothing is.

    ``type`` and ``role`` are read as strings everywhere later (a stored ``{"role": {"x": 1}}`` broke every
    page of its conversation); an ``id`` must fit the store.
    """
    problems = {}
    for name in ("type", "role"):
        if name in item and not isinstance(item[name], str):
            problems[name] = ["must be a string."]
    if "id" in item and isinstance(item["id"], str) and (why := _storable(item["id"])):
        problems["id"] = [why]
    return problems or None


def _storable_field(limit: int = _ID_MAX) -> Any:
    def check(value: Any) -> None:
        if isinstance(value, str) and (why := _storable(value, limit)):
            raise ValidationError(why)

    return check


class CreateResponseSchema(Schema):
    """``POST /v1/responses``. Known fields are checked by type; the rest is kept.

    Unknown fields are INCLUDEd and forwarded untouched: the API grows faster than the gateway, and a
    field the gateway has never heard of must still reach a provider that knows it.
    """

    class Meta:
        unknown = INCLUDE

    model = f.String(required=True, validate=[validate.Length(min=1, error="must not be empty."), _storable_field(256)])
    input = f.Typed(str, list)
    previous_response_id = f.String(**_NULLABLE, validate=[validate.Length(min=1), _storable_field()])
    instructions = f.String(**_NULLABLE)
    conversation = f.Typed(str, dict, **_NULLABLE)
    tools = mfields.List(f.Object())
    tool_choice = f.Typed(str, dict)
    stream = f.Boolean(**_NULLABLE)
    store = f.Boolean(**_NULLABLE)
    background = f.Boolean(**_NULLABLE)
    parallel_tool_calls = f.Boolean(**_NULLABLE)
    max_output_tokens = f.Integer(**_NULLABLE, validate=validate.Range(min=1, error="must be a positive integer."))
    max_tool_calls = f.Integer(**_NULLABLE, validate=validate.Range(min=1, error="must be a positive integer."))
    temperature = f.Number(**_NULLABLE, validate=validate.Range(min=0, max=2))
    top_p = f.Number(**_NULLABLE, validate=validate.Range(min=0, max=1))
    top_logprobs = f.Integer(**_NULLABLE, validate=validate.Range(min=0, max=20))
    truncation = f.String(**_NULLABLE, validate=validate.OneOf(["auto", "disabled"]))
    text = f.Object(**_NULLABLE)
    reasoning = f.Object(**_NULLABLE)
    metadata = mfields.Dict(
        keys=f.String(validate=validate.Length(max=64)),
        values=f.String(validate=validate.Length(max=512)),
        **_NULLABLE,
    )
    include = mfields.List(f.String(), **_NULLABLE)
    user = f.String(**_NULLABLE)
    safety_identifier = f.String(**_NULLABLE, validate=validate.Length(max=64))
    prompt_cache_key = f.String(**_NULLABLE)
    service_tier = f.String(**_NULLABLE)
    stream_options = f.Object(**_NULLABLE)
    prompt = f.Object(**_NULLABLE)
    context_management = mfields.List(f.Object(), **_NULLABLE)

    @validates("input")
    def _input_items(self, value: Any, **kwargs: Any) -> None:
        if isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise ValidationError({i: ["expected an object (an input item)."]})
                if problems := item_problems(item):
                    raise ValidationError({i: problems})

    @validates("conversation")
    def _conversation_id(self, value: Any, **kwargs: Any) -> None:
        conv_id = value.get("id") if isinstance(value, dict) else value
        if isinstance(conv_id, str) and (why := _storable(conv_id)):
            raise ValidationError(why)

    @validates("prompt")
    def _prompt(self, value: Any, **kwargs: Any) -> None:
        if value is not None and (problems := prompt_problems(value)):
            raise ValidationError(problems)

    @validates("metadata")
    def _metadata_size(self, value: Any, **kwargs: Any) -> None:
        if value is not None and len(value) > 16:
            raise ValidationError("at most 16 key-value pairs.")

    @validates_schema
    def _input_or_context(self, data: dict, **kwargs: Any) -> None:
        if data.get("input") is None and not any(
            data.get(k) for k in ("previous_response_id", "conversation", "prompt")
        ):
            raise ValidationError("Missing data for required field.", "input")
        # previous_response_id with conversation is refused by the pipeline, with the API's code for it.
        if data.get("background") and data.get("store") is False:
            raise ValidationError("Background responses must be stored: remove store: false, or background.", "store")


class _ContextSchema(Schema):
    """What compact and input_tokens share with create: a model, input and the context it continues.

    Unknown fields are INCLUDEd, as for create: they reach a provider that answers these itself.
    """

    class Meta:
        unknown = INCLUDE

    input = f.Typed(str, list, **_NULLABLE)
    instructions = f.String(**_NULLABLE)
    previous_response_id = f.String(**_NULLABLE, validate=[validate.Length(min=1), _storable_field()])
    conversation = f.Typed(str, dict, **_NULLABLE)
    tools = mfields.List(f.Object(), **_NULLABLE)
    tool_choice = f.Typed(str, dict, **_NULLABLE)
    parallel_tool_calls = f.Boolean(**_NULLABLE)
    text = f.Object(**_NULLABLE)
    reasoning = f.Object(**_NULLABLE)

    _input_items = CreateResponseSchema._input_items
    _conversation_id = CreateResponseSchema._conversation_id


class CompactSchema(_ContextSchema):
    """``POST /v1/responses/compact``."""

    model = f.String(required=True, validate=validate.Length(min=1, error="must not be empty."))


class InputTokensSchema(_ContextSchema):
    """``POST /v1/responses/input_tokens``: every field optional, as in the API."""

    model = f.String(**_NULLABLE)
    truncation = f.String(**_NULLABLE, validate=validate.OneOf(["auto", "disabled"]))


class _ReadQuery(Schema):
    """Query strings of the read endpoints. Unknown parameters are refused: a typo must not pass silently.

    ``beta`` is accepted and ignored: newer SDKs add ``?beta=true`` to every Responses path.
    """

    class Meta:
        unknown = RAISE

    include = mfields.List(mfields.String())
    beta = mfields.String()


class RetrieveQuerySchema(_ReadQuery):
    stream = mfields.Boolean()
    starting_after = mfields.Integer(validate=validate.Range(min=0))
    include_obfuscation = mfields.Boolean()


class InputItemsQuerySchema(_ReadQuery):
    limit = mfields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    order = mfields.String(load_default="desc", validate=validate.OneOf(["asc", "desc"]))
    after = mfields.String(validate=[validate.Length(min=1), _storable_field()])
    # Removed from the SDK in v1.101.0, still sent by older clients: accepted, not used.
    before = mfields.String()


def query_dict(args: Any) -> dict[str, Any]:
    """Werkzeug's MultiDict -> plain dict: ``include[]`` and repeated ``include`` become one list."""
    out: dict[str, Any] = {}
    for key in args:
        values = args.getlist(key)
        name = key[:-2] if key.endswith("[]") else key
        if name == "include":
            out.setdefault("include", []).extend(values)
        else:
            out[name] = values[-1]
    return out

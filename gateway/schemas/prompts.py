"""Schemas of prompt templates: the bodies of ``/v1/gateway/prompts``, a prompt file's entries, the query
strings, and the ``prompt`` of a create.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, validate, validates, validates_schema
from marshmallow import fields as mfields

from . import fields as f

# The content parts a variable may be, besides a string (openai-python's ResponsePrompt ``Variables``).
PART_TYPES = ("input_text", "input_image", "input_file")
ROLES = ("user", "assistant", "system", "developer")
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
PROMPT_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,127}")
_ID_MAX = 128


def variable_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a variable's value (a string, or an input_text, input_image or input_file
    part), or None.
    """
    if isinstance(value, str):
        return None
    if not isinstance(value, dict) or value.get("type") not in PART_TYPES:
        return f"expected a string or a content part of type {', '.join(PART_TYPES)}."
    if value["type"] == "input_text" and not isinstance(value.get("text"), str):
        return "an input_text part needs its text."
    return None


def _message_problems(item: Any) -> dict | list | None:
    """What is wrong with one message of a template's input, by field; None when nothing is."""
    if not isinstance(item, dict):
        return ["expected an object (a message with role and content)."]
    if item.get("type", "message") != "message":
        return {"type": ["a template's input holds messages only."]}
    if item.get("role") not in ROLES:
        return {"role": [f"must be one of {', '.join(ROLES)}."]}
    content = item.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return {"content": ["expected a string or an array of content parts."]}
    for i, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            return {"content": {i: ["expected an object with a type (a content part)."]}}
    return None


class PromptSchema(Schema):
    """``POST /v1/gateway/prompts`` and ``POST /v1/gateway/prompts/{id}``: one version of a template.

    Unknown fields are refused: these endpoints are the gateway's own, and a typo must not pass silently.
    """

    class Meta:
        unknown = RAISE

    instructions = f.String(allow_none=True)
    input = f.Typed(str, list, allow_none=True)
    variables = f.Object(allow_none=True)

    @validates("input")
    def _messages(self, value: Any, **kwargs: Any) -> None:
        if isinstance(value, list):
            for i, item in enumerate(value):
                if problems := _message_problems(item):
                    raise ValidationError({i: problems})

    @validates("variables")
    def _defaults(self, value: Any, **kwargs: Any) -> None:
        for name, default in (value or {}).items():
            if not VARIABLE.fullmatch(name):
                raise ValidationError({name: ["a variable's name is a letter or _, then letters, digits or _."]})
            if why := variable_problem(default):
                raise ValidationError({name: [why]})

    @validates_schema
    def _something(self, data: dict, **kwargs: Any) -> None:
        if not data.get("instructions") and not data.get("input"):
            raise ValidationError("A prompt template needs instructions, input, or both.")


class PromptFileEntrySchema(PromptSchema):
    """One ``[[prompts]]`` entry of a prompt file: a version of a template, with its id."""

    id = f.String(required=True, validate=validate.Regexp(PROMPT_ID, error="letters, digits, _ - . :, up to 128."))
    version = f.Typed(str, int, load_default="1")

    @validates("version")
    def _number(self, value: Any, **kwargs: Any) -> None:
        if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
            raise ValidationError("a version is a positive whole number.")


class PromptQuerySchema(Schema):
    """``GET /v1/gateway/prompts/{id}``: ``version``, else the latest."""

    class Meta:
        unknown = RAISE

    version = mfields.String(validate=validate.Regexp(r"^[1-9][0-9]{0,8}$", error="a positive whole number."))


class PromptListQuerySchema(Schema):
    """``GET /v1/gateway/prompts``: pages of the latest version of each prompt, by id."""

    class Meta:
        unknown = RAISE

    limit = mfields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    after = mfields.String(validate=validate.Length(min=1, max=_ID_MAX))


def prompt_problems(value: Any) -> dict | None:
    """What is wrong with a create's ``prompt`` (``{"id", "version", "variables"}``), by field; None when
    nothing is. Other fields are left for the provider that holds the prompt.
    """
    prompt_id = value.get("id")
    if not isinstance(prompt_id, str) or not prompt_id:
        return {"id": ["Missing data for required field." if prompt_id is None else "expected a non-empty string."]}
    if len(prompt_id) > _ID_MAX or "\x00" in prompt_id:
        return {"id": [f"must be at most {_ID_MAX} characters, with no NUL."]}
    if value.get("version") is not None and not isinstance(value["version"], str):
        return {"version": ["expected a string."]}
    variables = value.get("variables")
    if variables is None:
        return None
    if not isinstance(variables, dict):
        return {"variables": ["expected an object."]}
    for name, given in variables.items():
        if why := variable_problem(given):
            return {"variables": {name: [why]}}
    return None

"""The gateway's OpenAPI description, generated from its marshmallow schemas (apispec)."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import Schema, validate
from marshmallow import fields as mfields

from .config import ConfigSchema
from .conversations import (
    AddItemsSchema,
    CreateConversationSchema,
    ItemQuerySchema,
    ItemsQuerySchema,
    UpdateConversationSchema,
)
from .fields import Typed
from .prompts import PromptListQuerySchema, PromptQuerySchema, PromptSchema
from .responses import (
    CompactSchema,
    CreateResponseSchema,
    InputItemsQuerySchema,
    InputTokensSchema,
    RetrieveQuerySchema,
)
from .usage import UsageQuerySchema

_JSON_TYPES = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array", dict: "object"}


class ErrorDetailSchema(Schema):
    message = mfields.String(required=True)
    type = mfields.String(required=True)
    param = mfields.String(required=True, allow_none=True)
    code = mfields.String(required=True, allow_none=True)


class ErrorSchema(Schema):
    error = mfields.Nested(ErrorDetailSchema, required=True)


def _typed(self: Any, field: Any, **kwargs: Any) -> dict:
    """Strict JSON fields: their one type, or a oneOf of them."""
    if not isinstance(field, Typed):
        return {}
    names = [_JSON_TYPES[t] for t in field.types if not (t is int and float in field.types)]
    out: dict[str, Any] = {"type": names[0]} if len(names) == 1 else {"oneOf": [{"type": n} for n in names]}
    # apispec reads validators only off marshmallow's own Number and String fields.
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            if validator.min is not None:
                out["minimum"] = validator.min
            if validator.max is not None:
                out["maximum"] = validator.max
        elif isinstance(validator, validate.Length):
            if validator.min is not None:
                out["minLength"] = validator.min
            if validator.max is not None:
                out["maxLength"] = validator.max
        elif isinstance(validator, validate.OneOf):
            out["enum"] = list(validator.choices)
    return out


def _header(name: str, description: str) -> dict:
    return {"name": name, "in": "header", "schema": {"type": "string"}, "description": description}


_HEADERS = [
    _header(
        "x-portkey-provider",
        "Provider to route to (see the catalogue); may be left out for reads of recorded responses.",
    ),
    _header("x-portkey-api-key", "Gateway key or the provider's own key (else Authorization: Bearer)."),
    _header("x-portkey-config", "Routing config as JSON (see RoutingConfig) or the name of a saved config."),
    _header("x-portkey-custom-host", "Provider base URL; only hosts in the custom_hosts setting."),
    _header("x-portkey-trace-id", "Trace id echoed in the response (minted when absent)."),
]
_RESPONSE_ID = {"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}
_MODEL_ID = {"name": "model_id", "in": "path", "required": True, "schema": {"type": "string"}}
_CONVERSATION_ID = {"name": "conversation_id", "in": "path", "required": True, "schema": {"type": "string"}}
_ITEM_ID = {"name": "item_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PROMPT_ID = {"name": "prompt_id", "in": "path", "required": True, "schema": {"type": "string"}}
# The Conversations endpoints ask no provider: only the key matters.
_KEY_HEADERS = [h for h in _HEADERS if h["name"] in ("x-portkey-api-key", "x-portkey-trace-id")]
_ERROR = {"description": "Error, in the OpenAI shape", "content": {"application/json": {"schema": "Error"}}}
_OBJECT = {"content": {"application/json": {"schema": {"type": "object"}}}}


def build_spec(version: str) -> dict:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="AI gateway",
        version=version,
        openapi_version="3.0.3",
        plugins=[plugin],
        info={"description": "The OpenAI Responses API, relayed to many providers."},
    )
    plugin.converter.add_attribute_function(_typed)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("CreateResponse", schema=CreateResponseSchema)
    spec.components.schema("RoutingConfig", schema=ConfigSchema)
    spec.components.schema("CompactResponse", schema=CompactSchema)
    spec.components.schema("CountInputTokens", schema=InputTokensSchema)
    spec.components.schema("CreateConversation", schema=CreateConversationSchema)
    spec.components.schema("UpdateConversation", schema=UpdateConversationSchema)
    spec.components.schema("AddConversationItems", schema=AddItemsSchema)
    spec.components.schema("PromptTemplate", schema=PromptSchema)
    security = [{"bearer": []}]
    errors = {"default": _ERROR}
    spec.path(
        path="/v1/responses",
        operations={
            "post": {
                "summary": "Create a model response (JSON, or server-sent events with stream: true); with "
                "background: true it is queued and answered at once",
                "security": security,
                "parameters": _HEADERS,
                "requestBody": {"required": True, "content": {"application/json": {"schema": "CreateResponse"}}},
                "responses": {
                    "200": {
                        "description": "The Response object, or its event stream",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **errors,
                },
            }
        },
    )
    spec.path(
        path="/v1/responses/{response_id}",
        operations={
            "get": {
                "summary": "Retrieve a response; with stream=true, replay a background response's events after "
                "starting_after and follow them to the end",
                "security": security,
                "parameters": [_RESPONSE_ID, *_HEADERS, {"in": "query", "schema": RetrieveQuerySchema}],
                "responses": {
                    "200": {
                        "description": "The Response object as it stands, or its event stream",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **errors,
                },
            },
            "delete": {
                "summary": "Delete a response",
                "security": security,
                "parameters": [_RESPONSE_ID, *_HEADERS],
                "responses": {"200": {"description": "{id, object, deleted: true}", **_OBJECT}, **errors},
            },
        },
    )
    spec.path(
        path="/v1/responses/{response_id}/cancel",
        operations={
            "post": {
                "summary": "Cancel a background response (a finished one is returned unchanged)",
                "security": security,
                "parameters": [_RESPONSE_ID, *_HEADERS],
                "responses": {"200": {"description": "The Response object, status cancelled", **_OBJECT}, **errors},
            }
        },
    )
    spec.path(
        path="/v1/responses/{response_id}/input_items",
        operations={
            "get": {
                "summary": "List a response's input items",
                "security": security,
                "parameters": [_RESPONSE_ID, *_HEADERS, {"in": "query", "schema": InputItemsQuerySchema}],
                "responses": {"200": {"description": "A list page", **_OBJECT}, **errors},
            }
        },
    )
    for path, name, summary, what in (
        ("/v1/responses/compact", "CompactResponse", "Compact a context", "A response.compaction object"),
        ("/v1/responses/input_tokens", "CountInputTokens", "Count input tokens", "A response.input_tokens object"),
    ):
        spec.path(
            path=path,
            operations={
                "post": {
                    "summary": summary,
                    "security": security,
                    "parameters": _HEADERS,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": name}}},
                    "responses": {"200": {"description": what, **_OBJECT}, **errors},
                }
            },
        )
    conversation = {"description": "The Conversation object", **_OBJECT}
    spec.path(
        path="/v1/conversations",
        operations={
            "post": {
                "summary": "Create a conversation",
                "security": security,
                "parameters": _KEY_HEADERS,
                "requestBody": {"content": {"application/json": {"schema": "CreateConversation"}}},
                "responses": {"200": conversation, **errors},
            }
        },
    )
    spec.path(
        path="/v1/conversations/{conversation_id}",
        operations={
            "get": {
                "summary": "Retrieve a conversation",
                "security": security,
                "parameters": [_CONVERSATION_ID, *_KEY_HEADERS],
                "responses": {"200": conversation, **errors},
            },
            "post": {
                "summary": "Update a conversation's metadata",
                "security": security,
                "parameters": [_CONVERSATION_ID, *_KEY_HEADERS],
                "requestBody": {"required": True, "content": {"application/json": {"schema": "UpdateConversation"}}},
                "responses": {"200": conversation, **errors},
            },
            "delete": {
                "summary": "Delete a conversation and its items",
                "security": security,
                "parameters": [_CONVERSATION_ID, *_KEY_HEADERS],
                "responses": {"200": {"description": "{id, object, deleted: true}", **_OBJECT}, **errors},
            },
        },
    )
    spec.path(
        path="/v1/conversations/{conversation_id}/items",
        operations={
            "get": {
                "summary": "List a conversation's items",
                "security": security,
                "parameters": [_CONVERSATION_ID, *_KEY_HEADERS, {"in": "query", "schema": ItemsQuerySchema}],
                "responses": {"200": {"description": "A list page", **_OBJECT}, **errors},
            },
            "post": {
                "summary": "Add items to a conversation",
                "security": security,
                "parameters": [_CONVERSATION_ID, *_KEY_HEADERS, {"in": "query", "schema": ItemQuerySchema}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": "AddConversationItems"}}},
                "responses": {"200": {"description": "The items added, as a list page", **_OBJECT}, **errors},
            },
        },
    )
    spec.path(
        path="/v1/conversations/{conversation_id}/items/{item_id}",
        operations={
            "get": {
                "summary": "Retrieve an item of a conversation",
                "security": security,
                "parameters": [_CONVERSATION_ID, _ITEM_ID, *_KEY_HEADERS, {"in": "query", "schema": ItemQuerySchema}],
                "responses": {"200": {"description": "The item", **_OBJECT}, **errors},
            },
            "delete": {
                "summary": "Delete an item of a conversation",
                "security": security,
                "parameters": [_CONVERSATION_ID, _ITEM_ID, *_KEY_HEADERS],
                "responses": {"200": conversation, **errors},
            },
        },
    )
    # The operator's endpoints: the admin key (admin_key), as a bearer token; 404 when none is configured.
    admin = [{"bearer": []}]
    prompt = {"description": "The prompt object: id, version, instructions, input, variables, source", **_OBJECT}
    template = {"required": True, "content": {"application/json": {"schema": "PromptTemplate"}}}
    spec.path(
        path="/v1/gateway/prompts",
        operations={
            "post": {
                "summary": "Create a prompt template (version 1 of a new pmpt_ id); asks for the admin key",
                "security": admin,
                "requestBody": template,
                "responses": {"200": prompt, **errors},
            },
            "get": {
                "summary": "List prompt templates (the latest version of each, by id), the prompt files' included",
                "security": admin,
                "parameters": [{"in": "query", "schema": PromptListQuerySchema}],
                "responses": {"200": {"description": "A list page", **_OBJECT}, **errors},
            },
        },
    )
    spec.path(
        path="/v1/gateway/prompts/{prompt_id}",
        operations={
            "post": {
                "summary": "Add a version to a prompt template (not to one of a prompt file)",
                "security": admin,
                "parameters": [_PROMPT_ID],
                "requestBody": template,
                "responses": {"200": prompt, **errors},
            },
            "get": {
                "summary": "Retrieve a prompt template: its latest version, or the one ?version names",
                "security": admin,
                "parameters": [_PROMPT_ID, {"in": "query", "schema": PromptQuerySchema}],
                "responses": {"200": prompt, **errors},
            },
            "delete": {
                "summary": "Delete a prompt template with every version (not one of a prompt file)",
                "security": admin,
                "parameters": [_PROMPT_ID],
                "responses": {"200": {"description": "{id, object, deleted: true}", **_OBJECT}, **errors},
            },
        },
    )
    spec.path(
        path="/v1/gateway/usage",
        operations={
            "get": {
                "summary": "The usage report: requests, tokens and cost (USD) by key, provider, model and UTC day",
                "security": admin,
                "parameters": [{"in": "query", "schema": UsageQuerySchema}],
                "responses": {
                    "200": {"description": "{object, since, until, group_by, data, total}", **_OBJECT},
                    **errors,
                },
            }
        },
    )
    spec.path(
        path="/v1/models",
        operations={
            "get": {
                "summary": "List the provider's models (relayed as the provider answers)",
                "security": security,
                "parameters": _HEADERS,
                "responses": {"200": {"description": "A list of model objects", **_OBJECT}, **errors},
            }
        },
    )
    spec.path(
        path="/v1/models/{model_id}",
        operations={
            "get": {
                "summary": "Retrieve one of the provider's models",
                "security": security,
                "parameters": [_MODEL_ID, *_HEADERS],
                "responses": {"200": {"description": "A model object", **_OBJECT}, **errors},
            }
        },
    )
    spec.path(
        path="/healthz",
        operations={"get": {"summary": "Liveness", "responses": {"200": {"description": "ok", **_OBJECT}}}},
    )
    spec.path(
        path="/readyz",
        operations={
            "get": {
                "summary": "Readiness: the store answers and its schema is current",
                "responses": {
                    "200": {"description": "ready", **_OBJECT},
                    "503": {"description": "not ready, with the reason", **_OBJECT},
                },
            }
        },
    )
    spec.path(
        path="/metrics",
        operations={
            "get": {
                "summary": "Prometheus metrics of every worker (asks for a bearer token when metrics_token is set)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": {"description": "metrics_token is set and was not given", **_OBJECT},
                },
            }
        },
    )
    spec.path(
        path="/openapi.json",
        operations={
            "get": {"summary": "This description", "responses": {"200": {"description": "OpenAPI", **_OBJECT}}}
        },
    )
    return spec.to_dict()

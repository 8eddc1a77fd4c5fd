"""The Conversations API endpoints. Views validate, call one function of ``gateway.conversations``, and
return. No provider is involved: ``x-portkey-provider`` is not needed here.
"""

from __future__ import annotations

import re

import orjson
from flask import Response, request

from .. import conversations
from ..errors import InvalidRequest
from ..schemas import validate
from ..schemas.conversations import (
    AddItemsSchema,
    CreateConversationSchema,
    ItemQuerySchema,
    ItemsQuerySchema,
    UpdateConversationSchema,
)
from ..schemas.responses import query_dict
from ..services import current_services
from . import caller_of, json_body
from .v1 import V1Blueprint

bp = V1Blueprint("conversations", __name__)

_create_schema = CreateConversationSchema()
_update_schema = UpdateConversationSchema()
_add_schema = AddItemsSchema()
_items_schema = ItemsQuerySchema()
_item_schema = ItemQuerySchema()
_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,127}$")


def _id(value: str, param: str) -> str:
    if not _ID.match(value):
        raise InvalidRequest(f"Invalid {param.replace('_', ' ')} '{value[:64]}'.", param=param)
    return value


def _json(data: dict) -> Response:
    return Response(orjson.dumps(data), status=200, mimetype="application/json")


@bp.post("/conversations")
def create() -> Response:
    svc = current_services()
    caller = caller_of(svc)
    body = validate(_create_schema, json_body())
    return _json(conversations.create(svc, caller, body))


@bp.get("/conversations/<conversation_id>")
def retrieve(conversation_id: str) -> Response:
    svc = current_services()
    caller = caller_of(svc)
    return _json(conversations.retrieve(svc, caller, _id(conversation_id, "conversation_id")))


@bp.post("/conversations/<conversation_id>")
def update(conversation_id: str) -> Response:
    svc = current_services()
    caller = caller_of(svc)
    body = validate(_update_schema, json_body())
    return _json(conversations.update(svc, caller, _id(conversation_id, "conversation_id"), body["metadata"]))


@bp.delete("/conversations/<conversation_id>")
def delete(conversation_id: str) -> Response:
    svc = current_services()
    caller = caller_of(svc)
    return _json(conversations.delete(svc, caller, _id(conversation_id, "conversation_id")))


@bp.get("/conversations/<conversation_id>/items")
def list_items(conversation_id: str) -> Response:
    svc = current_services()
    caller = caller_of(svc)
    query = validate(_items_schema, query_dict(request.args))
    return _json(conversations.list_items(svc, caller, _id(conversation_id, "conversation_id"), query))


@bp.post("/conversations/<conversation_id>/items")
def add_items(conversation_id: str) -> Response:
    svc = current_services()
    caller = caller_of(svc)
    validate(_item_schema, query_dict(request.args))
    body = validate(_add_schema, json_body())
    return _json(conversations.add_items(svc, caller, _id(conversation_id, "conversation_id"), body["items"]))


@bp.get("/conversations/<conversation_id>/items/<item_id>")
def retrieve_item(conversation_id: str, item_id: str) -> Response:
    svc = current_services()
    caller = caller_of(svc)
    validate(_item_schema, query_dict(request.args))
    conv = _id(conversation_id, "conversation_id")
    return _json(conversations.retrieve_item(svc, caller, conv, _id(item_id, "item_id")))


@bp.delete("/conversations/<conversation_id>/items/<item_id>")
def delete_item(conversation_id: str, item_id: str) -> Response:
    svc = current_services()
    caller = caller_of(svc)
    conv = _id(conversation_id, "conversation_id")
    return _json(conversations.delete_item(svc, caller, conv, _id(item_id, "item_id")))

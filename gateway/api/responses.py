"""The Responses API endpoints. Views validate, call one pipeline function, and return."""

from __future__ import annotations

import re

from flask import Response, g, request

from .. import pipeline
from ..call import Call
from ..errors import InvalidRequest
from ..schemas import validate
from ..schemas.responses import (
    CompactSchema,
    CreateResponseSchema,
    InputItemsQuerySchema,
    InputTokensSchema,
    RetrieveQuerySchema,
    query_dict,
)
from ..services import current_services
from . import caller_of, json_body, to_response
from .v1 import V1Blueprint

bp = V1Blueprint("responses", __name__)

_create_schema = CreateResponseSchema()
_retrieve_schema = RetrieveQuerySchema()
_items_schema = InputItemsQuerySchema()
_compact_schema = CompactSchema()
_count_schema = InputTokensSchema()
# Ids go into provider URL paths: no slashes, and never a bare "." or "..".
_RESPONSE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,255}$")


def _response_id(response_id: str) -> str:
    if not _RESPONSE_ID.match(response_id):
        raise InvalidRequest(f"Invalid response id '{response_id[:64]}'.", param="response_id")
    return response_id


@bp.post("/responses")
def create() -> Response:
    svc = current_services()
    body = json_body()
    validate(_create_schema, body)
    trace = g.trace
    trace.model, trace.stream = body.get("model"), bool(body.get("stream"))
    if svc.observer.log_prompts:
        trace.prompt = {"instructions": body.get("instructions"), "input": body.get("input")}
    caller = caller_of(svc)
    reply, target = pipeline.create(svc, Call(caller, request.headers, body, trace))
    return to_response(reply, target.provider.name)


@bp.get("/responses/<response_id>")
def retrieve(response_id: str) -> Response:
    svc = current_services()
    query = validate(_retrieve_schema, query_dict(request.args))
    caller = caller_of(svc)
    reply, target = pipeline.retrieve(svc, caller, request.headers, _response_id(response_id), query)
    return to_response(reply, target.provider.name)


@bp.delete("/responses/<response_id>")
def delete(response_id: str) -> Response:
    svc = current_services()
    caller = caller_of(svc)
    reply, target = pipeline.delete(svc, caller, request.headers, _response_id(response_id))
    return to_response(reply, target.provider.name)


@bp.get("/responses/<response_id>/input_items")
def input_items(response_id: str) -> Response:
    svc = current_services()
    query = validate(_items_schema, query_dict(request.args))
    caller = caller_of(svc)
    reply, target = pipeline.input_items(svc, caller, request.headers, _response_id(response_id), query)
    return to_response(reply, target.provider.name)


@bp.post("/responses/compact")
def compact() -> Response:
    svc = current_services()
    caller = caller_of(svc)  # who asks comes first: no key is a 401 whatever the body
    body = json_body()
    validate(_compact_schema, body)
    g.trace.model = body.get("model")
    reply, target = pipeline.compact(svc, caller, request.headers, body, g.trace)
    return to_response(reply, target.provider.name)


@bp.post("/responses/input_tokens")
def input_tokens() -> Response:
    svc = current_services()
    caller = caller_of(svc)  # who asks comes first: no key is a 401 whatever the body
    body = json_body()
    validate(_count_schema, body)
    g.trace.model = body.get("model")
    reply, target = pipeline.input_tokens(svc, caller, request.headers, body, g.trace)
    return to_response(reply, target.provider.name)


@bp.post("/responses/<response_id>/cancel")
def cancel(response_id: str) -> Response:
    svc = current_services()
    caller = caller_of(svc)
    reply, target = pipeline.cancel(svc, caller, request.headers, _response_id(response_id))
    return to_response(reply, target.provider.name)

"""The prompt template endpoints, ``/v1/gateway/prompts``, under the admin key (admin.py registers them).

Views validate, call one method of the gateway's PromptLibrary (gateway/prompts.py), and return.
"""

from __future__ import annotations

import re

import orjson
from flask import Response, request

from ..errors import InvalidRequest
from ..schemas import validate
from ..schemas.prompts import PromptListQuerySchema, PromptQuerySchema, PromptSchema
from ..schemas.responses import query_dict
from ..services import current_services
from . import json_body
from .v1 import V1Blueprint

bp = V1Blueprint("prompts", __name__, url_prefix=None)

_body_schema = PromptSchema()
_get_schema = PromptQuerySchema()
_list_schema = PromptListQuerySchema()
_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,127}$")


def _id(prompt_id: str) -> str:
    if not _ID.match(prompt_id):
        raise InvalidRequest(f"Invalid prompt id '{prompt_id[:64]}'.", param="prompt_id")
    return prompt_id


def _json(data: dict) -> Response:
    return Response(orjson.dumps(data), status=200, mimetype="application/json")


@bp.post("/prompts")
def create() -> Response:
    body = validate(_body_schema, json_body())
    return _json(current_services().prompts.create(body))


@bp.get("/prompts")
def list_prompts() -> Response:
    query = validate(_list_schema, query_dict(request.args))
    return _json(current_services().prompts.page(after=query.get("after"), limit=query["limit"]))


@bp.post("/prompts/<prompt_id>")
def add_version(prompt_id: str) -> Response:
    prompt_id = _id(prompt_id)
    body = validate(_body_schema, json_body())
    return _json(current_services().prompts.add_version(prompt_id, body))


@bp.get("/prompts/<prompt_id>")
def retrieve(prompt_id: str) -> Response:
    query = validate(_get_schema, query_dict(request.args))
    return _json(current_services().prompts.get(_id(prompt_id), query.get("version")))


@bp.delete("/prompts/<prompt_id>")
def delete(prompt_id: str) -> Response:
    return _json(current_services().prompts.delete(_id(prompt_id)))

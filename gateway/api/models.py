"""``GET /v1/models`` and ``GET /v1/models/{id}``, relayed to the provider the request names."""

from __future__ import annotations

import re

from flask import Response, g, request

from .. import pipeline
from ..errors import InvalidRequest
from ..services import current_services
from . import caller_of, to_response
from .v1 import V1Blueprint

bp = V1Blueprint("models", __name__)

# Model ids go into provider URL paths: slashes are allowed (``org/model``), but no empty, "." or ".." segment.
_SEGMENT = re.compile(r"^[A-Za-z0-9_@:+-][A-Za-z0-9_.@:+-]{0,255}$")


def _model_id(model_id: str) -> str:
    segments = model_id.split("/")
    if len(model_id) > 512 or not all(_SEGMENT.match(s) for s in segments):
        raise InvalidRequest(f"Invalid model id '{model_id[:64]}'.", param="model")
    return model_id


@bp.get("/models")
def list_models() -> Response:
    svc = current_services()
    caller = caller_of(svc)
    reply, target = pipeline.models(svc, caller, request.headers, None, g.trace)
    return to_response(reply, target.provider.name)


@bp.get("/models/<path:model_id>")
def retrieve_model(model_id: str) -> Response:
    svc = current_services()
    model_id = _model_id(model_id)
    caller = caller_of(svc)
    reply, target = pipeline.models(svc, caller, request.headers, model_id, g.trace)
    return to_response(reply, target.provider.name)

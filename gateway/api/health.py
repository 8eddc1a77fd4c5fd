"""Liveness and the OpenAPI description."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from .. import __version__
from ..schemas.openapi import build_spec
from ..services import current_services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@bp.get("/metrics")
def metrics() -> Response:
    body = current_services().observer.exposition()
    return Response(body, mimetype="text/plain; version=0.0.4")


@bp.get("/openapi.json")
def openapi() -> dict:
    spec = current_app.extensions.get("gateway.openapi")
    if spec is None:
        spec = current_app.extensions["gateway.openapi"] = build_spec(__version__)
    return spec

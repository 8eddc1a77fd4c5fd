"""Liveness, readiness, metrics and the OpenAPI description."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, request

from .. import __version__
from ..errors import AuthenticationError
from ..schemas.openapi import build_spec
from ..services import current_services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict:
    """Liveness: the process answers. It says nothing of the store, so a store outage restarts nothing."""
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict, int]:
    """Readiness: the store answers and its schema is the one this code expects (else 503)."""
    ok, why = current_services().store.ready()
    return ({"status": "ready"}, 200) if ok else ({"status": "unavailable", "reason": why}, 503)


@bp.get("/metrics")
def metrics() -> Response:
    svc = current_services()
    token = svc.settings.metrics_token
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise AuthenticationError("The metrics endpoint needs 'Authorization: Bearer <metrics_token>'.")
    return Response(svc.observer.exposition(), mimetype="text/plain; version=0.0.4")


@bp.get("/openapi.json")
def openapi() -> dict:
    spec = current_app.extensions.get("gateway.openapi")
    if spec is None:
        spec = current_app.extensions["gateway.openapi"] = build_spec(__version__)
    return spec

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
    """Readiness: the store answers and its schema is the one this code expects (else 503).

    The background queue's state, as this worker last found it, is in the body, and never makes it 503:
    a Redis shared by every instance going down must not take them all out of the load balancer.
    """
    svc = current_services()
    ok, why = svc.store.ready()
    queue = svc.background.health.state()
    body = {"status": "ready", "queue": queue} if ok else {"status": "unavailable", "reason": why, "queue": queue}
    if svc.limits.active:  # the limits' counter, likewise: with limits_fail = "open" a Redis that is down is let be
        body["limits"] = svc.limits.state()
    return body, 200 if ok else 503


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

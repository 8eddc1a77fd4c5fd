"""HTTP surface: blueprints and the helpers every view uses."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request, stream_with_context

from ..native import Reply

_TRACE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def init_app(app: Flask) -> None:
    from .health import bp as health_bp
    from .responses import bp as responses_bp

    app.register_blueprint(health_bp)
    app.register_blueprint(responses_bp)

    @app.before_request
    def _trace_id() -> None:
        incoming = request.headers.get("x-portkey-trace-id", "")
        g.trace_id = incoming if _TRACE_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _portkey_headers(resp: Response) -> Response:
        resp.headers["x-portkey-trace-id"] = g.get("trace_id", "")
        return resp


def to_response(reply: Reply, provider: str) -> Response:
    """A relay Reply -> Flask Response, SSE unbuffered all the way (nginx included)."""
    if reply.stream is not None:
        resp = Response(stream_with_context(reply.stream), status=reply.status, mimetype="text/event-stream")
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Accel-Buffering"] = "no"
    else:
        resp = Response(reply.body, status=reply.status, mimetype="application/json")
    resp.headers["x-portkey-provider"] = provider
    resp.headers["x-portkey-last-used-option-index"] = "0"
    resp.headers["x-portkey-retry-attempt-count"] = "0"
    resp.headers.update(reply.headers)  # the relay's own marks, where it made them, win
    return resp

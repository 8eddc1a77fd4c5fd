"""One error family and one JSON shape, ``{"error": {"message", "type", "param", "code"}}``, for every failure."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask, Response

# Flask is imported only where errors are rendered (init_app), so that the store and the emulation, which
# raise these errors, import nothing from Flask.
log = logging.getLogger("gateway")


_UNSET: object = object()


class GatewayError(Exception):
    """An error the gateway answers with; subclasses fix the status and type."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | object | None = _UNSET,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not _UNSET:
            self.code = code  # type: ignore[assignment]
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


class InvalidRequest(GatewayError):
    """400: the request is malformed or a parameter is wrong."""

    code = "invalid_value"


class AuthenticationError(GatewayError):
    status = 401
    code = "invalid_api_key"


class NotFound(GatewayError):
    status = 404
    code = None  # as the OpenAI API answers: no code, no param


class UpstreamError(GatewayError):
    """The provider could not be reached or answered with something unusable."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class StoreUnavailable(GatewayError):
    """503: the store could not be read or written in time; nothing was acknowledged that it does not hold."""

    status = 503
    type = "server_error"
    code = "store_unavailable"

    def __init__(self, message: str = "The gateway's store is unavailable; try again shortly.", retry_after: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class RequestTimeout(GatewayError):
    """408: the config's request_timeout ran out before the provider answered."""

    status = 408
    type = "timeout_error"
    code = "request_timeout"


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# What a client learns of a failure inside the gateway: nothing about internals.
INTERNAL_ERROR = error_body("The gateway had an internal error.", "server_error", None, "internal_error")


def note_error(trace: Any, err: GatewayError) -> None:
    """Put a refused or failed request's error, and the provider it reached, in its trace (any transport)."""
    trace.error = err.code or err.type
    trace.provider = trace.provider or err.headers.get("x-portkey-provider")


UNKNOWN_PATH = "Unknown path. See the gateway's README for its endpoints."


def unknown_path() -> NotFound:
    """The 404 of a path the gateway does not serve (also the admin surface's, when no admin key is set)."""
    return NotFound(UNKNOWN_PATH, code="unknown_url")


def not_found_response(response_id: str) -> NotFound:
    """The one 404 for a response that does not exist or belongs to another key: the two must not differ."""
    return NotFound(f"Response with id '{response_id}' not found.")


def _render(body: dict, status: int, headers: dict[str, str] | None = None) -> Response:
    from flask import Response, json

    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


# Werkzeug's HTTP errors keep their status; this maps the common ones to OpenAI-style codes.
_HTTP_CODES = {
    400: ("invalid_request_error", "invalid_request"),
    404: ("invalid_request_error", "unknown_url"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
}


def init_app(app: Flask) -> None:
    """Render every error, ours, Werkzeug's and unexpected ones, in the one JSON shape."""
    from flask import current_app, g
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(GatewayError)
    def _gateway_error(err: GatewayError) -> Response:
        trace = g.get("trace")
        if trace is not None:
            note_error(trace, err)
        return _render(err.body(), err.status, err.headers)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        type_, code = _HTTP_CODES.get(status, ("invalid_request_error" if status < 500 else "server_error", None))
        message = err.description or err.name
        if status == 404:
            message = UNKNOWN_PATH
        elif status == 413:
            limit = current_app.config.get("MAX_CONTENT_LENGTH")
            message = f"The request body is larger than {limit} bytes, the gateway's `max_body_bytes` setting."
        headers = {}
        valid_methods = getattr(err, "valid_methods", None)
        if valid_methods:
            headers["Allow"] = ", ".join(valid_methods)
        return _render(error_body(message, type_, None, code), status, headers)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        # The traceback goes to the log only; the client learns nothing about internals.
        log.exception("unhandled error")
        return _render(INTERNAL_ERROR, 500)


def conversation_not_found(conv_id: str, param: str | None = None) -> NotFound:
    """The one 404 for a conversation that does not exist or belongs to another key."""
    return NotFound(f"Conversation with id '{conv_id}' not found.", param=param)

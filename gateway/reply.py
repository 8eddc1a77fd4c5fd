"""A relay's two ends: the call to a target's provider, and the Reply made of its answer.

Headers worth passing are kept, errors put in the OpenAI shape, events framed.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

from . import sse
from .errors import GatewayError, UpstreamError, error_body
from .routing import Target
from .upstream import Upstream, UpstreamResponse

# Provider response headers worth a client's while: request ids for support tickets, rate-limit state.
_PASSED_HEADER_PREFIXES = ("x-ratelimit-", "openai-")
_PASSED_HEADERS = frozenset({"x-request-id", "retry-after", "retry-after-ms"})
# Client headers a native provider understands and the gateway may pass on.
_FORWARDED_CLIENT_HEADERS = ("OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta")


@dataclasses.dataclass
class Reply:
    """What the gateway sends back: a status, headers, and a JSON body or an SSE byte stream."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: Iterator[sse.Event] | None = None  # events as values: the HTTP door writes their bytes
    # The parsed JSON body of a 2xx JSON reply, for the store.
    data: Any = None
    # For a stream: breaks the provider connection from another thread or greenlet (the client left while
    # the provider was silent), so that the stream's own generator ends and cleans up.
    abort: Callable[[], None] | None = None
    # For a stream: its first item is ready (the provider's first event was read before the reply was made),
    # so taking it waits on nothing.
    primed: bool = False


def passed_headers(resp: UpstreamResponse) -> dict[str, str]:
    out = {}
    for key, value in resp.headers.items():
        lower = key.lower()
        if lower in _PASSED_HEADERS or lower.startswith(_PASSED_HEADER_PREFIXES):
            out[key] = value
    return out


def request_headers(target: Target, client_headers: Mapping[str, str] | None, *, stream: bool) -> dict[str, str]:
    """Auth and content headers for ``target``; the client's OpenAI-* headers only when given (native calls)."""
    headers = target.provider.auth_headers(target.api_key)
    headers["Content-Type"] = "application/json"
    headers["Accept"] = "text/event-stream" if stream else "application/json"
    for name in _FORWARDED_CLIENT_HEADERS if client_headers is not None else ():
        value = client_headers.get(name)
        if value:
            headers[name] = value
    return headers


def send(
    upstream: Upstream,
    target: Target,
    method: str,
    path: str,
    client_headers: Mapping[str, str] | None,
    *,
    stream: bool = False,
    params: Any = None,
    body: bytes | None = None,
    timeout: tuple[float, float] | None = None,
) -> UpstreamResponse:
    """One call to ``target``'s provider at ``path``: its URL, auth headers and query (unless ``params``)."""
    provider = target.provider
    resp = upstream.request(
        provider.name,
        method,
        provider.url(path),
        headers=request_headers(target, client_headers, stream=stream),
        params=provider.query if params is None else params,
        body=body,
        timeout=timeout,
    )
    resp.secret = target.api_key
    return resp


def json_reply(resp: UpstreamResponse) -> Reply:
    """Read a provider's JSON answer: errors keep their status, and a non-JSON error is put in the shape.

    Raises UpstreamError (502) for a success whose body is not a JSON object.
    """
    body = resp.read()
    if resp.status >= 400 and resp.secret and resp.secret.encode() in body:
        # A provider that echoes its request would hand the operator's credentials to a gateway-key caller.
        body = body.replace(resp.secret.encode(), b"[redacted]")
    headers = passed_headers(resp)
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if resp.status >= 400:
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return Reply(resp.status, headers, body)
        text = body[:500].decode("utf-8", "replace").strip() or "(empty body)"
        wrapped = error_body(
            f"The provider '{resp.provider}' answered {resp.status}: {text}",
            "invalid_request_error" if resp.status < 500 else "server_error",
            None,
            "upstream_error",
        )
        return Reply(resp.status, headers, orjson.dumps(wrapped))
    if not isinstance(data, dict):
        raise UpstreamError(
            f"The provider '{resp.provider}' answered {resp.status} with a body that is not a JSON object.",
            code="upstream_invalid_response",
        )
    return Reply(resp.status, headers, body, data=data)


def error_event(sequence_number: int, err: GatewayError) -> sse.Event:
    """An in-band error, flat as the spec has it and nested as the live API sends it.

    The nested ``error`` object makes the openai SDKs raise instead of ending quietly.
    """
    return sse.Event.of(error_payload(sequence_number, err))


def error_payload(sequence_number: int, err: GatewayError) -> dict:
    """The ``error`` event's payload (see ``error_event``)."""
    return {
        "type": "error",
        "sequence_number": sequence_number,
        "code": err.code,
        "message": err.message,
        "param": err.param,
        "error": {"type": err.type, "code": err.code, "message": err.message, "param": err.param},
    }


def opened_events(resp: UpstreamResponse) -> Iterator[sse.Event]:
    """The provider's SSE events, the first one already read.

    Reading it before anything is returned makes a provider that fails at once an ordinary JSON error,
    and a reason to try the next target. Raises UpstreamError (and closes the response) when the stream
    breaks or ends before its first event.
    """
    events = sse.iter_events(resp.iter_chunks())
    try:
        first = next(events)
    except StopIteration:
        resp.close()
        raise UpstreamError(
            f"The provider '{resp.provider}' closed the stream before its first event.",
            code="upstream_stream_interrupted",
        ) from None
    except GatewayError:
        resp.close()
        raise
    return itertools.chain((first,), events)


def json_ok(data: dict) -> Reply:
    """A 200 answer the gateway makes itself, from ``data``."""
    return Reply(200, {}, orjson.dumps(data), data=data)

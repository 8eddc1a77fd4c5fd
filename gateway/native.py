"""Pass-through to providers that have a Responses API: JSON relayed as is, SSE relayed event by event."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from . import sse
from .errors import GatewayError, UpstreamError, error_body
from .routing import Target
from .upstream import Upstream, UpstreamResponse

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})

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
    stream: Iterator[bytes] | None = None
    # The parsed JSON body of a 2xx JSON reply, for the store.
    data: Any = None


def passed_headers(resp: UpstreamResponse) -> dict[str, str]:
    out = {}
    for key, value in resp.headers.items():
        lower = key.lower()
        if lower in _PASSED_HEADERS or lower.startswith(_PASSED_HEADER_PREFIXES):
            out[key] = value
    return out


def request_headers(target: Target, client_headers: Mapping[str, str], *, stream: bool) -> dict[str, str]:
    headers = target.provider.auth_headers(target.api_key)
    headers["Content-Type"] = "application/json"
    headers["Accept"] = "text/event-stream" if stream else "application/json"
    for name in _FORWARDED_CLIENT_HEADERS:
        value = client_headers.get(name)
        if value:
            headers[name] = value
    return headers


def json_reply(resp: UpstreamResponse) -> Reply:
    """Read a provider's JSON answer: errors keep their status, and a non-JSON error is put in the shape.

    Raises UpstreamError (502) for a success whose body is not a JSON object.
    """
    body = resp.read()
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


def create(
    upstream: Upstream,
    target: Target,
    body: bytes,
    *,
    stream: bool,
    client_headers: Mapping[str, str],
    on_final: Callable[[dict], None] | None = None,
) -> Reply:
    """POST the body to the provider's /responses.

    The upstream call is made before anything is returned, so every failure up to the provider's status
    line is an ordinary JSON error. ``on_final`` gets the final Response object of a stream (from its
    terminal event) before that event is passed on.
    """
    provider = target.provider
    resp = upstream.request(
        provider.name,
        "POST",
        provider.url("/responses"),
        headers=request_headers(target, client_headers, stream=stream),
        params=provider.query,
        body=body,
    )
    if stream and resp.status < 300 and resp.content_type == "text/event-stream":
        return Reply(200, passed_headers(resp), stream=relay_events(resp, on_final))
    return json_reply(resp)


def relay_events(resp: UpstreamResponse, on_final: Callable[[dict], None] | None = None) -> Iterator[bytes]:
    """Pass each SSE event on as soon as it is complete; end a broken stream with an ``error`` event.

    A stream that stops without a terminal event is broken too: a client must never mistake a cut for
    a clean end. The upstream connection is closed in every case, including the client going away.
    """
    last_seq = -1
    finished = False
    try:
        for event in sse.iter_events(resp.iter_chunks()):
            payload = sse.decode_data(event)
            if payload is not None:
                seq = payload.get("sequence_number")
                if isinstance(seq, int):
                    last_seq = seq
                kind = payload.get("type")
                if kind in TERMINAL_EVENTS:
                    finished = True
                    if on_final is not None and isinstance(payload.get("response"), dict):
                        on_final(payload["response"])
            yield event.raw
        if not finished:
            yield error_event(
                last_seq + 1,
                UpstreamError(
                    f"The provider '{resp.provider}' ended the stream before its final event.",
                    code="upstream_stream_interrupted",
                ),
            )
    except GatewayError as exc:
        if not finished:
            yield error_event(last_seq + 1, exc)
    finally:
        resp.close()


def error_event(sequence_number: int, err: GatewayError) -> bytes:
    """An in-band error, flat as the spec has it and nested as the live API sends it.

    The nested ``error`` object makes the openai SDKs raise instead of ending quietly.
    """
    return sse.encode(
        {
            "type": "error",
            "sequence_number": sequence_number,
            "code": err.code,
            "message": err.message,
            "param": err.param,
            "error": {"type": err.type, "code": err.code, "message": err.message, "param": err.param},
        }
    )


def _path(response_id: str, suffix: str = "") -> str:
    return "/responses/" + quote(response_id, safe="") + suffix


def retrieve(
    upstream: Upstream, target: Target, response_id: str, query: Mapping[str, Any], client_headers: Mapping[str, str]
) -> Reply:
    """GET a response; with ``stream=true`` the provider's replay comes through as SSE."""
    stream = bool(query.get("stream"))
    resp = upstream.request(
        target.provider.name,
        "GET",
        target.provider.url(_path(response_id)),
        headers=request_headers(target, client_headers, stream=stream),
        params=_params(target, query),
    )
    if stream and resp.status < 300 and resp.content_type == "text/event-stream":
        return Reply(200, passed_headers(resp), stream=relay_events(resp))
    return json_reply(resp)


def delete(upstream: Upstream, target: Target, response_id: str, client_headers: Mapping[str, str]) -> Reply:
    resp = upstream.request(
        target.provider.name,
        "DELETE",
        target.provider.url(_path(response_id)),
        headers=request_headers(target, client_headers, stream=False),
        params=target.provider.query,
    )
    return json_reply(resp)


def input_items(
    upstream: Upstream, target: Target, response_id: str, query: Mapping[str, Any], client_headers: Mapping[str, str]
) -> Reply:
    resp = upstream.request(
        target.provider.name,
        "GET",
        target.provider.url(_path(response_id, "/input_items")),
        headers=request_headers(target, client_headers, stream=False),
        params=_params(target, query),
    )
    return json_reply(resp)


def _params(target: Target, query: Mapping[str, Any]) -> list[tuple[str, str]]:
    params = list(target.provider.query.items())
    for key, value in query.items():
        if key == "beta":
            continue
        if key == "include":
            params.extend(("include[]", v) for v in value)
        elif isinstance(value, bool):
            params.append((key, "true" if value else "false"))
        else:
            params.append((key, str(value)))
    return params

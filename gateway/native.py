"""Pass-through to providers that have a Responses API: JSON relayed as is, SSE relayed event by event."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

import orjson

from . import sse
from .call import Outgoing
from .errors import GatewayError, StoreUnavailable, UpstreamError
from .reply import Reply, error_event, json_reply, opened_events, passed_headers, send
from .routing import Target
from .sse import TERMINAL_EVENTS
from .upstream import Upstream, UpstreamResponse

# Terminal events that acknowledge a result: sent only once the record is committed.
SUCCESS_EVENTS = frozenset({"response.completed", "response.incomplete"})


def create(upstream: Upstream, out: Outgoing, finish: Callable[[dict], None]) -> Reply:
    """The adapter for a provider with a Responses API: POST ``out.body`` to its /responses.

    The body is the parsed one the gateway checked, re-encoded, never the raw bytes, in which a duplicate
    key could say one thing to the gateway's parser (the last value wins) and another to the provider's.
    ``finish`` gets the final response (for a stream, from its terminal event, before that event is passed
    on; or the last one seen, marked failed, when the stream breaks). ``out.amend`` amends every response
    the client sees (the gateway's own fields, such as ``conversation``).
    """
    target, amend = out.target, out.amend
    stream = bool(out.body.get("stream"))
    reply = _post(
        upstream,
        target,
        orjson.dumps(out.body),
        stream=stream,
        client_headers=out.client_headers,
        on_final=finish,
        rewrite=amend,
    )
    if reply.data is not None:
        if amend is not None:
            amend(reply.data)
        finish(reply.data)
        if amend is not None:
            reply.body = orjson.dumps(reply.data)
    return reply


def _post(
    upstream: Upstream,
    target: Target,
    body: bytes,
    *,
    stream: bool,
    client_headers: Mapping[str, str],
    on_final: Callable[[dict], None] | None = None,
    rewrite: Callable[[dict], None] | None = None,
) -> Reply:
    """POST the body to the provider's /responses. The upstream call is made, and for a stream its first
    event read, before anything is returned: every failure up to then is an ordinary JSON error (and a
    reason to try the next target).
    """
    resp = send(
        upstream,
        target,
        "POST",
        "/responses",
        client_headers,
        stream=stream,
        body=body,
        timeout=upstream.timeout_for(target.timeout),
    )
    if stream and resp.status < 300 and resp.content_type == "text/event-stream":
        stream = relay_events(resp, opened_events(resp), on_final, rewrite)
        return Reply(200, passed_headers(resp), stream=stream, abort=resp.abort, primed=True)
    return json_reply(resp)


def relay_events(
    resp: UpstreamResponse,
    events: Iterator[sse.Event],
    on_final: Callable[[dict], None] | None = None,
    rewrite: Callable[[dict], None] | None = None,
) -> Iterator[sse.Event]:
    """Pass each SSE event on as soon as it is complete; end a broken stream with an ``error`` event.

    A stream that stops without a terminal event is broken too: a client must never mistake a cut for
    a clean end. A success the store could not record is not passed on either: the stream ends with a
    ``store_unavailable`` error event. The upstream connection is closed in every case, including the
    client going away.
    """
    last_seq = -1
    finished = False
    latest: dict | None = None  # the newest Response snapshot, recorded as failed if the stream breaks
    failure: GatewayError | None = None
    try:
        for event in events:
            payload = event.json()
            if payload is not None:
                seq = payload.get("sequence_number")
                if isinstance(seq, int):
                    last_seq = seq
                if isinstance(payload.get("response"), dict):
                    latest = payload["response"]
                    if rewrite is not None:
                        rewrite(latest)
                        event = sse.Event.of(payload)
                kind = payload.get("type")
                if kind in TERMINAL_EVENTS:
                    finished = True
                    if on_final is not None and latest is not None:
                        try:
                            on_final(latest)
                        except StoreUnavailable as exc:
                            if kind in SUCCESS_EVENTS:
                                failure = exc
                                last_seq = seq - 1 if isinstance(seq, int) else last_seq  # its number is free
                                break
                            # A failure the client learns of anyway; the store's outage is in the log.
            yield event
        if not finished:
            failure = UpstreamError(
                f"The provider '{resp.provider}' ended the stream before its final event.",
                code="upstream_stream_interrupted",
            )
    except GatewayError as exc:
        if not finished:
            failure = exc
    finally:
        resp.close()
    if failure is not None:
        if on_final is not None and latest is not None and not isinstance(failure, StoreUnavailable):
            # The client is told of the break below even when the store cannot keep the failed record.
            with contextlib.suppress(StoreUnavailable):
                on_final({**latest, "status": "failed", "error": {"code": "server_error", "message": failure.message}})
        yield error_event(last_seq + 1, failure)


def path_of(response_id: str, suffix: str = "") -> str:
    """The provider path of one response (``suffix``: ``/input_items``, ``/cancel``)."""
    return "/responses/" + quote(response_id, safe="") + suffix


def retrieve(
    upstream: Upstream, target: Target, response_id: str, query: Mapping[str, Any], client_headers: Mapping[str, str]
) -> Reply:
    """GET a response; with ``stream=true`` the provider's replay comes through as SSE."""
    stream = bool(query.get("stream"))
    resp = send(
        upstream, target, "GET", path_of(response_id), client_headers, stream=stream, params=_params(target, query)
    )
    if stream and resp.status < 300 and resp.content_type == "text/event-stream":
        return Reply(200, passed_headers(resp), stream=relay_events(resp), abort=resp.abort)
    return json_reply(resp)


def delete(upstream: Upstream, target: Target, response_id: str, client_headers: Mapping[str, str]) -> Reply:
    return json_reply(send(upstream, target, "DELETE", path_of(response_id), client_headers))


def input_items(
    upstream: Upstream, target: Target, response_id: str, query: Mapping[str, Any], client_headers: Mapping[str, str]
) -> Reply:
    path = path_of(response_id, "/input_items")
    return json_reply(send(upstream, target, "GET", path, client_headers, params=_params(target, query)))


def post(upstream: Upstream, target: Target, path: str, body: bytes, client_headers: Mapping[str, str]) -> Reply:
    """POST a JSON body to one of the provider's Responses endpoints (``/responses/compact``...)."""
    resp = send(upstream, target, "POST", path, client_headers, body=body, timeout=upstream.timeout_for(target.timeout))
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

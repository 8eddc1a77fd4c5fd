"""The Responses API over Chat Completions: translate the request, call /chat/completions, translate back.

The gateway mints every id (``resp_``, ``msg_``, ``fc_``, ``rs_``) so that the stream, the final object and
the store agree; history comes from the store, so the provider needs no memory of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import orjson

from .. import sse
from ..call import Outgoing
from ..errors import GatewayError, StoreUnavailable, UpstreamError
from ..reply import Reply, error_event, json_reply, opened_events, passed_headers, send
from ..routing import Target
from ..upstream import Upstream, UpstreamResponse
from . import request as translate
from . import response as build
from .stream import StreamTranslator
from .tools import found_tools


def chat_completions(upstream: Upstream, target: Target, chat: dict, *, stream: bool = False) -> UpstreamResponse:
    """The one Chat Completions call: emulated turns, the gateway's compaction summaries."""
    return send(
        upstream,
        target,
        "POST",
        "/chat/completions",
        None,
        stream=stream,
        body=orjson.dumps(chat),
        timeout=upstream.timeout_for(target.timeout),
    )


def create(upstream: Upstream, out: Outgoing, finish: Callable[[dict], None]) -> Reply:
    """The adapter for a provider with only Chat Completions: answer ``out.body`` through it.

    ``finish`` gets the final Response object before the client does (for a stream: before its terminal
    event). Raises InvalidRequest for what Chat Completions cannot express, and the upstream errors.
    ``out.response_id`` is the id to answer with (a background run's, given when it was queued), else minted.
    """
    target, body, history, new_items = out.target, out.body, out.history, out.new_items
    previous_response_id, response_id, on_final = out.previous_response_id, out.response_id, finish
    provider = target.provider
    stream = bool(body.get("stream"))
    omitted: list[str] = []
    found = found_tools(history, new_items)
    chat = translate.to_chat(
        body,
        history,
        new_items,
        max_tokens_param=provider.max_tokens_param,
        hosted_tools=provider.hosted_tools or "omit",
        omitted=omitted,
        chat_fields=provider.chat_fields,
        reasoning_field=provider.reasoning_field,
        found=found,
    )
    # The tools a call can name: the request's, and those a tool search loaded earlier in the conversation.
    names = translate.tool_names([*(body.get("tools") or []), *found] if found else body.get("tools"))
    response_id = response_id or build.new_id("resp")
    resp = chat_completions(upstream, target, chat, stream=stream)
    if stream and resp.status < 300:
        if resp.content_type != "text/event-stream":
            resp.close()
            raise UpstreamError(
                f"The provider '{provider.name}' answered a streaming request without streaming.",
                code="upstream_invalid_response",
            )
        events = opened_events(resp)
        skeleton = build.skeleton(body, response_id, int(time.time()), previous_response_id)
        translator = StreamTranslator(skeleton, names)
        stream = _events(resp, events, translator, on_final)
        return _said(Reply(200, passed_headers(resp), stream=stream, abort=resp.abort, primed=True), omitted)
    reply = json_reply(resp)
    if reply.data is None:  # a provider error, already in the OpenAI shape
        return reply
    final = build.from_chat(body, reply.data, response_id, previous_response_id, names)
    on_final(final)
    return _said(Reply(200, reply.headers, orjson.dumps(final), data=final), omitted)


OMITTED_HEADER = "x-gateway-omitted-tools"


def _said(reply: Reply, omitted: list[str]) -> Reply:
    """The tool types left out of the provider's request, named in the reply (and so in the access log)."""
    if omitted:
        reply.headers[OMITTED_HEADER] = ",".join(dict.fromkeys(omitted))
    return reply


def _events(
    resp: UpstreamResponse,
    events: Iterator[sse.Event],
    translator: StreamTranslator,
    on_final: Callable[[dict], None],
) -> Iterator[sse.Event]:
    """The Responses event stream for one chat stream. A provider that breaks off ends it with
    ``response.failed`` (recorded as failed), never with a silent end; a result the store could not
    record ends it with a ``store_unavailable`` error event in place of its terminal event.
    """
    try:
        yield from translator.start()
        done = False
        for event in events:
            if done or event.data.strip() == "[DONE]":
                # Read on to the end of the body (nothing follows [DONE]) so the connection can be reused.
                done = True
                continue
            chunk = event.json()
            if chunk is None:
                continue
            if chunk.get("error"):
                error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                raise UpstreamError(
                    f"The provider '{resp.provider}' reported an error mid-stream: {error.get('message')}",
                    code="upstream_error",
                )
            yield from translator.feed(chunk)
        if not done and translator.finish_reason is None:
            raise UpstreamError(
                f"The provider '{resp.provider}' ended the stream before its final chunk.",
                code="upstream_stream_interrupted",
            )
        final, closing = translator.complete()
    except GatewayError as exc:
        final, closing = translator.fail("server_error", exc.message)
    finally:
        resp.close()
    try:
        on_final(final)
    except StoreUnavailable as exc:
        if final["status"] == "failed":
            yield from closing  # a failure the client learns of anyway
            return
        # Everything but the terminal event: the items are whole, the result is not acknowledged.
        yield from closing[:-1]
        yield error_event(translator.seq - 1, exc)
        return
    yield from closing

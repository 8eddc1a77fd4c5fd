"""Requests about a turn that create nothing: compact it, count its input tokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from .. import compaction, emulation, native, tokens
from ..auth import Caller
from ..call import Turn
from ..errors import (
    InvalidRequest,
)
from ..observe import Trace
from ..reply import Reply, json_ok
from ..routing import Target
from ..tokens import count_offline
from .attempt import attempt
from .resolve import request_items, stored_history

if TYPE_CHECKING:
    from ..services import Services


def _passed_through(svc: Services, caller: Caller, turn: Turn, target: Target) -> bytes:
    """The body for a provider's own endpoint: as it came, unless the provider cannot know its context."""
    body = turn.body
    own_chain = turn.prev is None or turn.prev.provider == target.provider.name
    items = [
        {k: v for k, v in i.items() if k != "id"} if i.get("type") != "item_reference" else i for i in turn.input.items
    ]
    if turn.conversation is None and own_chain:
        if not compaction.has_ours(turn.input.items):
            return orjson.dumps(body)
        return orjson.dumps({**body, "input": compaction.expand(svc.sealer, caller.tenant, items)})
    history = stored_history(svc, caller, turn)
    inlined = {k: v for k, v in body.items() if k != "previous_response_id"}
    inlined["input"] = compaction.expand(svc.sealer, caller.tenant, history + items)
    return orjson.dumps(inlined)


def compact(
    svc: Services, caller: Caller, headers: Mapping[str, str], body: dict, trace: Trace
) -> tuple[Reply, Target]:
    """POST /v1/responses/compact: the provider's own where the catalogue says it has one; otherwise the
    gateway asks the model for a summary and answers a ``response.compaction`` with its opaque item.
    """
    if "prompt" in body:  # a template the gateway holds is part of the context, as in a create
        body = svc.prompts.expand(body)
    turn = request_items(svc, caller, body)

    def call(target: Target) -> Reply:
        if target.provider.native and target.provider.compact:
            payload = _passed_through(svc, caller, turn, target)
            reply = native.post(svc.upstream, target, "/responses/compact", payload, headers)
            if reply.status < 400 and isinstance(reply.data, dict):
                _charge(svc, caller, trace, target, reply.data, turn.body.get("model"), "compaction")
            return reply
        history = stored_history(svc, caller, turn)
        items = compaction.expand(svc.sealer, caller.tenant, history + turn.input.items)
        if turn.body.get("instructions"):
            items = [{"type": "message", "role": "developer", "content": turn.body["instructions"]}, *items]
        if not items:
            raise InvalidRequest("There is nothing to compact: give input, a conversation or a previous response.")
        made = compaction.summarise(svc.upstream, target, turn.body["model"], items)
        if isinstance(made, Reply):
            return made
        summary, usage = made
        compacted = compaction.compacted(svc.sealer.item(caller.tenant, summary), usage)
        _charge(svc, caller, trace, target, compacted, turn.body.get("model"), "compaction")
        return json_ok(compacted)

    return attempt(svc, svc.router.targets(headers, caller), call, trace)


def _charge(svc: Services, caller: Caller, trace: Trace, target: Target, answer: dict, model: Any, kind: str) -> None:
    """A compaction or a token count, charged as the call it was (see spend.Spend.charge)."""
    svc.spend.charge(
        caller,
        trace,
        target.provider,
        answer.get("usage"),
        model=answer.get("model") or model,
        response_id=answer.get("id") if kind == "compaction" else None,
        status="completed",
        kind=kind,
    )


TOKEN_COUNT_HEADER = "x-gateway-token-count"  # "provider": counted by the provider; "estimate": offline


def input_tokens(
    svc: Services, caller: Caller, headers: Mapping[str, str], body: dict, trace: Trace
) -> tuple[Reply, Target]:
    """POST /v1/responses/input_tokens: the provider's own count where it has one (the Responses endpoint,
    or its own counting endpoint, translated); otherwise an offline count, marked as an estimate.
    """
    if "prompt" in body:  # a template the gateway holds is counted, as a create would send it
        body = svc.prompts.expand(body)
    turn = request_items(svc, caller, body)

    def call(target: Target) -> Reply:
        provider = target.provider
        if provider.native and provider.input_tokens:
            payload = _passed_through(svc, caller, turn, target)
            reply = native.post(svc.upstream, target, "/responses/input_tokens", payload, headers)
            reply.headers[TOKEN_COUNT_HEADER] = "provider"
            if reply.status < 400:
                _charge(svc, caller, trace, target, {}, turn.body.get("model"), "input_tokens")
            return reply
        history = compaction.expand(svc.sealer, caller.tenant, stored_history(svc, caller, turn))
        new = compaction.expand(svc.sealer, caller.tenant, turn.input.items)
        model = turn.body.get("model") or ""
        chat = emulation.request.to_chat(
            {**turn.body, "model": model}, history, new, max_tokens_param=provider.max_tokens_param
        )
        if provider.count_tokens in tokens.SHAPES:
            if not model:
                raise InvalidRequest(
                    f"The provider '{provider.name}' counts tokens per model: give the model.", param="model"
                )
            counted = tokens.count_with_provider(svc.upstream, target, chat)
            if isinstance(counted, Reply):
                return counted
            count, source = counted, "provider"
        else:
            count, source = count_offline(model, chat)[0], "estimate"
        reply = json_ok({"object": "response.input_tokens", "input_tokens": count})
        reply.headers[TOKEN_COUNT_HEADER] = source
        # A count is not billed by the providers that make one: a row of zero tokens, at 0.
        _charge(svc, caller, trace, target, {}, model, "input_tokens")
        return reply

    return attempt(svc, svc.router.targets(headers, caller), call, trace)

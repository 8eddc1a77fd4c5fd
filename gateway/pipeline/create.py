"""Create: a Turn, sent to the targets in order, its response amended and recorded."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from .. import compaction, emulation, native, warmup
from ..auth import Caller
from ..call import Turn
from ..errors import (
    GatewayError,
    InvalidRequest,
    StoreUnavailable,
)
from ..memory import ConnectionMemory
from ..observe import Trace
from ..reply import Reply
from ..routing import Target
from ..services import Services
from ..store import input_items_of, mint_item_id
from ..tokens import count_offline
from .attempt import attempt, mark
from .resolve import previous_not_found, resolve_turn

# Response statuses whose items join their conversation: the turn ended and the caller builds on it.
_APPENDED = frozenset({"completed", "incomplete"})

log = logging.getLogger("gateway")



def create(
    svc: Services,
    caller: Caller,
    headers: Mapping[str, str],
    body: dict,
    trace: Trace | None = None,
    *,
    memory: ConnectionMemory | None = None,
    generate: bool = True,
    run: Any = None,
) -> tuple[Reply, Target]:
    """POST /v1/responses. ``body`` is the validated request, parsed by ``schemas.json_object`` (so nested no
    deeper than the store can keep); the parsed body is what is forwarded.

    Each target is tried in turn, with its retries; the first success answers. The record is written
    before the reply (or a stream's terminal event) leaves, so a follow-up turn on any worker or host
    finds it. With a ``conversation``, its items are the context, and the turn's items join it in that
    same write, when the response completes.

    A long-lived connection (a WebSocket) passes its ``memory``: asked before the store for the previous
    response and its conversation, and given every finished response, also with ``store: false``.
    ``generate=False`` answers a response made of the request alone, without calling the provider.

    With ``background``, the checks are made here and the response is queued (see ``background.submit``);
    a consumer runs it later through this same function, passing its ``run``.
    """
    if body.get("background") and body.get("store") is False:
        raise InvalidRequest(
            "Background responses must be stored: remove store: false, or background.", param="store"
        )
    keep = body.get("store") is not False
    turn = resolve_turn(svc, caller, body, keep=keep, memory=memory, generate=generate, run=run)
    targets = svc.router.targets(headers, caller)
    prev_id, conv_id, turn_input = turn.prev_id, turn.conversation, turn.input
    trace = trace or Trace(trace_id="", method="POST", path="/v1/responses")
    if body.get("background") and run is None:
        reply = svc.background.submit(
            caller=caller,
            headers=headers,
            body=body,
            provider=targets[0].provider.name,
            input_items=turn_input.items,
            previous_response_id=prev_id,
            conversation=conv_id,
        )
        mark(reply.headers, targets[0], 0)
        return reply, targets[0]

    def call(target: Target) -> Reply:
        return _create_on(svc, caller, headers, turn, target, trace)

    return attempt(svc, targets, call, trace)



def _compaction_threshold(body: dict) -> int | None:
    """The ``compact_threshold`` of the request's ``context_management`` compaction entry, if any."""
    for entry in body.get("context_management") or []:
        if isinstance(entry, dict) and entry.get("type") == "compaction":
            threshold = entry.get("compact_threshold")
            return threshold if isinstance(threshold, int) and not isinstance(threshold, bool) else 0
    return None


def _estimate(model: str, items: list[dict]) -> int:
    try:
        chat = emulation.request.to_chat({"model": model}, items, [], max_tokens_param="max_tokens")
    except GatewayError:  # items Chat Completions cannot carry: their JSON is counted instead
        chat = {"messages": [{"role": "user", "content": orjson.dumps(items).decode()}]}
    return count_offline(model, chat)[0]


def _auto_compact(
    svc: Services, caller: Caller, target: Target, turn: Turn, history: list[dict], new: list[dict]
) -> tuple[list[dict], list[dict], dict | None] | Reply:
    """(history, new items, the compaction item to record) once ``context_management`` asks for compaction
    past its threshold; a provider's error as a Reply.

    With stored history (a conversation, a previous response), all of it is summarised, at the start of a
    user turn only (never between a tool call and its output); the item then opens this turn's recorded
    input, so later turns start from it. Without, the caller's own items before its last user message are
    summarised for this call; the caller keeps its items (``/v1/responses/compact`` gives it an item to keep).
    """
    threshold = _compaction_threshold(turn.body)
    model = turn.body["model"]
    if threshold is None or _estimate(model, history + new) <= threshold:
        return history, new, None
    if history:
        if new and new[0].get("type") == "function_call_output":
            return history, new, None
        prefix, rest = history, new
    else:
        users = [
            i for i, item in enumerate(new) if item.get("type", "message") == "message" and item.get("role") == "user"
        ]
        if not users or users[-1] == 0:
            return history, new, None
        prefix, rest = new[: users[-1]], new[users[-1] :]
    made = compaction.summarise(svc.upstream, target, model, compaction.expand(svc.sealer, caller.tenant, prefix))
    if isinstance(made, Reply):
        return made
    item = svc.sealer.item(caller.tenant, made[0])
    if history:
        return [item], rest, item
    return [], [item, *rest], None


def _create_on(
    svc: Services, caller: Caller, headers: Mapping[str, str], turn: Turn, target: Target, trace: Trace
) -> Reply:
    """One try of the create on one target."""
    body, prev_id, prev, keep, conv = turn.body, turn.prev_id, turn.prev, turn.keep, turn.conversation
    memory = turn.memory
    native_call = target.provider.native and turn.generate
    # A native provider continues by id only a response it made and kept itself; otherwise it is sent the
    # conversation (another provider's, one the gateway made, or one only a connection's memory holds).
    switched = (
        native_call
        and prev is not None
        and (
            prev.provider != target.provider.name
            or prev.mode != "native"
            or (memory is not None and memory.unstored(prev.id))
        )
    )
    if not native_call or switched or conv is not None:
        turn.input.check_resolved()  # an emulated provider keeps no items, a new one never saw these
    if target.override_params:
        body = {**body, **target.override_params}
    run = turn.run
    if run is not None:
        # A background run reads its provider's stream whatever the client asked: its events are stored as
        # they come. The provider is not asked to run it in the background itself.
        body = {**body, "stream": True}
        if native_call:
            body = {k: v for k, v in body.items() if k != "background"}
    # Compaction the provider does not do itself is the gateway's: the provider never sees the request for it.
    gateway_compacts = _compaction_threshold(body) is not None and not (native_call and target.provider.compact)
    if gateway_compacts:
        body = {k: v for k, v in body.items() if k != "context_management"}
    recorded_input = turn.input.items

    def record(response: dict) -> None:
        trace.usage_from(response)
        if not isinstance(response.get("id"), str):
            return
        appended = conv is not None and response.get("status") in _APPENDED
        if conv is not None:
            response["conversation"] = {"id": conv}
        if not keep and not appended:
            return
        if switched:
            response["previous_response_id"] = prev_id
        if run is not None:
            mode = "native" if native_call else "emulated"
            run.stage(response, recorded_input, conv if appended else None, target.provider.name, mode)
            return
        try:
            if not keep:
                svc.store.conversations.append_turn(
                    caller.tenant, conv, response["id"], recorded_input, _output_items(response)
                )
                return
            svc.store.record(
                tenant=caller.tenant,
                provider=target.provider.name,
                mode="native" if native_call else "emulated",
                response=response,
                input_items=recorded_input,
                conversation=conv if appended else None,
            )
        except StoreUnavailable:
            # Raised on to the transport: a 503 instead of the 200, or an error event instead of the
            # stream's terminal one. Nothing unrecorded is acknowledged.
            trace.error = StoreUnavailable.code
            raise

    history: list[dict] = []
    read = turn.history is not None or prev is None  # the conversation before this turn is known here
    if turn.history is not None:
        history = turn.history
    elif prev is not None and (not native_call or switched or gateway_compacts or (memory is not None and not keep)):
        # (A response only a connection's memory will hold needs the conversation before it.)
        history = compaction.since_last(_history(svc, caller, prev.id, memory))
        read = True
    before = history if read else None  # for the memory; None: the store holds it
    if not native_call and prev_id and prev is None:
        raise previous_not_found(prev_id)  # an emulated provider keeps no state to ask instead

    new_items = turn.input.items
    if gateway_compacts:
        compacted = _auto_compact(svc, caller, target, turn, history, new_items)
        if isinstance(compacted, Reply):
            return compacted
        history, new_items, item = compacted
        if item is not None:
            before = []  # the recorded input opens with the compaction item
            recorded_input = [item, *turn.input.items]
            if prev is not None and native_call and not switched:
                switched = True  # the provider is sent the compacted history, not an id that means all of it
    history = compaction.expand(svc.sealer, caller.tenant, history, "conversation" if conv else "input")

    if memory is not None:
        stored = record

        def record(response: dict) -> None:
            stored(response)
            mode, provider = "native" if native_call else "emulated", target.provider.name
            memory.remember(
                response, provider=provider, mode=mode, input_items=recorded_input, history=before, kept=keep
            )

    if not native_call:
        if not turn.generate:
            return warmup.prepare(body, prev_id, record)
        return emulation.create(
            svc.upstream,
            target,
            {**body, "conversation": {"id": conv}} if conv is not None else body,
            history=history,
            new_items=compaction.expand(svc.sealer, caller.tenant, new_items),
            previous_response_id=prev_id,
            on_final=record,
            response_id=run.response_id if run is not None else None,
        )

    # The body the gateway checked (ownership of previous_response_id, store) is the body it forwards: the
    # parsed one, never the raw bytes, in which a duplicate key could say one thing to the gateway's parser
    # (the last value wins) and another to the provider's. Re-encoding costs microseconds with orjson;
    # rejecting duplicates would need a second, slower parse of every body.
    # References to items another provider made go as the items (see TurnInput).
    turn_input = turn.input.native_input(target.provider.name)
    if new_items is not turn.input.items:  # compacted: the gateway's items, not the caller's
        turn_input = [{k: v for k, v in i.items() if k != "id"} for i in new_items]
    if turn_input is None and compaction.has_ours(turn.input.items):
        turn_input = input_items_of(body.get("input"), mint=False)
    if turn_input is not None:
        turn_input = compaction.expand(svc.sealer, caller.tenant, turn_input)
    if switched or conv is not None:
        # The provider has never seen this conversation: send it the history, not an id it cannot know.
        if turn_input is None:
            turn_input = input_items_of(body.get("input"), mint=False)
        inlined = {k: v for k, v in body.items() if k != "previous_response_id"}
        inlined["input"] = history + turn_input
        payload = orjson.dumps(inlined)
    elif turn_input is not None:
        payload = orjson.dumps({**body, "input": turn_input})
    else:
        payload = orjson.dumps(body)

    def amend(response: dict) -> None:
        if conv is not None:
            response["conversation"] = {"id": conv}
        if switched:  # the provider was sent the conversation, not the id: the client's events name it
            response["previous_response_id"] = prev_id
        if run is not None:  # the client knows the run by the id the gateway gave it when queueing it
            response["id"] = run.response_id
            response["background"] = True

    rewrite = amend if conv is not None or switched or run is not None else None
    reply = native.create(
        svc.upstream,
        target,
        payload,
        stream=bool(body.get("stream")),
        client_headers=headers,
        on_final=record,
        rewrite=rewrite,
    )
    if reply.data is not None:
        if run is not None:
            amend(reply.data)
        record(reply.data)
        if switched or conv is not None:
            reply.body = orjson.dumps(reply.data)
    return reply


def _history(svc: Services, caller: Caller, response_id: str, memory: ConnectionMemory | None) -> list[dict]:
    """The conversation up to and including ``response_id``: from the connection's memory, else the store."""
    held = memory.context(response_id) if memory is not None else None
    return held if held is not None else svc.store.chain_items(caller.tenant, response_id)


def _output_items(response: dict) -> list[dict]:
    out = []
    for item in response.get("output") or []:
        if isinstance(item, dict):
            out.append(item if isinstance(item.get("id"), str) else {**item, "id": mint_item_id(item)})
    return out


"""What each endpoint does, in plain values: check ownership, pick the target, relay, keep the record."""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from . import compaction, emulation, native, routing, tokens, warmup
from .auth import Caller
from .errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    RequestTimeout,
    StoreUnavailable,
    UpstreamTimeout,
    not_found_response,
)
from .items import TurnInput, as_listed, references
from .memory import ConnectionMemory
from .observe import Trace
from .reply import Reply
from .routing import Target
from .services import Services
from .store import StoredResponse, input_items_of, mint_item_id
from .tokens import count_offline

# The mode of a response the gateway ran in the background: read from the store, whichever provider made it.
BACKGROUND = "background"
# Response statuses whose items join their conversation: the turn ended and the caller builds on it.
_APPENDED = frozenset({"completed", "incomplete"})

log = logging.getLogger("gateway")


def _owned(svc: Services, caller: Caller, response_id: str) -> StoredResponse | None:
    """The caller's record of ``response_id``, or None when the provider itself should decide.

    Raises the one 404 for another tenant's response, and for an id the store has never seen when the
    caller uses credentials it shares with others (a gateway key): the provider could not tell them apart.
    Only a caller with its own provider key is sent on to the provider for an unknown id (a response made
    before the gateway, say), and there the provider's own key check protects it.
    """
    record = svc.store.get(caller.tenant, response_id)
    if record is not None:
        return record
    if caller.provider_key is None or svc.store.owner_of(response_id) is not None:
        raise not_found_response(response_id)
    return None


def _locate(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str
) -> tuple[StoredResponse | None, Target]:
    """The caller's record (see ``_owned``) and the provider to ask: the one that made the record (the
    header may then be left out), else the one the header names.
    """
    record = _owned(svc, caller, response_id)
    if record is not None:
        return record, routing.target_for(routing.provider_named(svc.catalogue, record.provider), caller)
    target = svc.router.targets(headers, caller)[0]
    if not target.provider.native:
        raise not_found_response(response_id)  # an emulated response exists only in the store
    return None, target


def _previous(
    svc: Services, caller: Caller, body: dict, memory: ConnectionMemory | None = None
) -> tuple[str | None, StoredResponse | None]:
    """The request's previous_response_id and the caller's record of it (None: the provider may know it),
    from the connection's memory when it holds it, else from the store.
    """
    prev_id = body.get("previous_response_id")
    if not prev_id:
        return None, None
    held = memory.get(prev_id) if memory is not None else None
    if held is not None:
        return prev_id, held
    try:
        return prev_id, _owned(svc, caller, prev_id)
    except NotFound:
        raise _previous_not_found(prev_id) from None


def _previous_not_found(prev_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response with id '{prev_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def _turn_input(svc: Services, caller: Caller, request_input: Any, keep: bool) -> TurnInput:
    """The request's input items, references resolved with one store query (none when there are none).

    Raises InvalidRequest for a reference without an id, for one to another tenant's item (the same 400 as
    for an unknown id), and for one the store does not hold for a caller whose credentials others share (a
    gateway key): the provider could not tell whose item it is. As with ``_owned``, only a caller with its
    own provider key may have an id the store has never seen sent on to the provider.
    """
    # Ids are minted only for what will be kept: `store: false` traffic mints none.
    items = input_items_of(request_input, mint=keep)
    wanted = references(items)
    if not wanted:
        return TurnInput(request_input, items)
    turn = TurnInput.resolve(request_input, items, wanted, svc.store.items_by_id(caller.tenant, wanted.values()))
    if caller.provider_key is None:
        turn.check_resolved()
    return turn


@dataclasses.dataclass(frozen=True)
class Turn:
    """What one create carries to every target it tries: the request and its context from the store."""

    body: dict  # the validated request, without ``conversation``
    prev_id: str | None
    prev: StoredResponse | None
    keep: bool  # record the response (``store`` is not false)
    input: TurnInput
    conversation: str | None = None
    history: list[dict] | None = None  # the conversation's items from its latest compaction on
    memory: ConnectionMemory | None = None  # a long-lived connection's memory of its responses
    generate: bool = True  # False: answer a response made of the request alone (warm-up)
    run: Any = None  # a background run (consumer.Run): its response id, and where its final record goes


def conversation_id(body: dict) -> str | None:
    """The request's ``conversation``, an id or ``{"id": ...}``; raises InvalidRequest for anything else."""
    value = body.get("conversation")
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        raise InvalidRequest("conversation must be a conversation id or an object with its id.", param="conversation")
    return value


def conversation_not_found(conv_id: str, param: str | None = None) -> NotFound:
    """The one 404 for a conversation that does not exist or belongs to another key."""
    return NotFound(f"Conversation with id '{conv_id}' not found.", param=param)


def _context(
    svc: Services, caller: Caller, body: dict, memory: ConnectionMemory | None = None
) -> tuple[str | None, StoredResponse | None, str | None, list[dict] | None]:
    """(previous_response_id, its record, conversation id, the conversation's items) of a request."""
    conv_id = conversation_id(body)
    if conv_id is not None and body.get("previous_response_id"):
        raise InvalidRequest(
            "Mutually exclusive parameters: Ensure you are only providing one of: 'previous_response_id' or "
            "'conversation'.",
            param="conversation",
            code="mutually_exclusive_parameters",
        )
    prev_id, prev = _previous(svc, caller, body, memory)
    history = None
    if conv_id is not None:
        history = svc.store.conversations.context(caller.tenant, conv_id)
        if history is None:
            raise conversation_not_found(conv_id, "conversation")
        history = compaction.since_last(history)
    return prev_id, prev, conv_id, history


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
    turn = _turn(svc, caller, body, keep=keep, memory=memory, generate=generate, run=run)
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
        _mark(reply.headers, targets[0], 0)
        return reply, targets[0]

    def call(target: Target) -> Reply:
        return _create_on(svc, caller, headers, turn, target, trace)

    return attempt(svc, targets, call, trace)


def attempt(
    svc: Services, targets: list[Target], call: Callable[[Target], Reply], trace: Trace
) -> tuple[Reply, Target]:
    """Call the targets in order, retrying each as its policy says; the first answer below 400 wins.

    Otherwise the last failure is the answer: a reply as the provider gave it, or the gateway's error.
    Response headers say which target answered and after how many retries.
    """
    settings = svc.settings
    for position, target in enumerate(targets):
        retries = 0
        trace.provider = target.provider.name
        trace.mode = "native" if target.provider.native else "emulated"
        trace.fallbacks = position
        while True:
            failure: GatewayError | None = None
            started = time.perf_counter()
            try:
                reply = call(target)
                status, retry_after = reply.status, reply.headers.get("Retry-After") or reply.headers.get("retry-after")
            except StoreUnavailable:
                # The provider answered; only the store failed. Another call (a retry, the next target)
                # would be paid for again and could not be recorded either.
                raise
            except GatewayError as err:
                if isinstance(err, UpstreamTimeout) and target.timeout is not None:
                    err = RequestTimeout(
                        f"The provider '{target.provider.name}' did not answer within the config's "
                        f"request_timeout of {int(target.timeout * 1000)} ms."
                    )
                failure, status, retry_after = err, err.status, err.headers.get("Retry-After")
            trace.upstream_ms = (time.perf_counter() - started) * 1000
            trace.retries = retries
            if status < 400:
                _mark(reply.headers, target, retries)
                return reply, target
            if retries < target.attempts and status in target.retry_on:
                wait = _backoff(retries, retry_after, settings)
                if wait is not None:
                    log.info("retrying %s after %s in %.2fs", target.provider.name, status, wait)
                    time.sleep(wait)
                    retries += 1
                    continue
            break
        last = position == len(targets) - 1
        if last or not target.falls_back_on(status):
            if failure is not None:
                _mark(failure.headers, target, retries)
                raise failure
            _mark(reply.headers, target, retries)
            return reply, target
        log.info("falling back from %s after %s", target.provider.name, status)
    raise AssertionError("no targets")  # routing always yields at least one


def _mark(headers: dict[str, str], target: Target, retries: int) -> None:
    headers["x-portkey-provider"] = target.provider.name
    headers["x-portkey-last-used-option-index"] = str(target.index)
    headers["x-portkey-retry-attempt-count"] = str(retries)


def _backoff(retries: int, retry_after: str | None, settings: Any) -> float | None:
    """Seconds to wait before retry ``retries + 1``: exponential with full jitter, capped, and never less
    than the provider's Retry-After; None when that asks for longer than the gateway will wait.
    """
    wait = random.uniform(0, min(settings.retry_backoff_cap, settings.retry_backoff_base * 2**retries))
    if retry_after:
        asked = _retry_after_seconds(retry_after)
        if asked is not None:
            if asked > settings.retry_after_max:
                return None
            wait = max(wait, asked)
    return wait


def _retry_after_seconds(value: str) -> float | None:
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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
        raise _previous_not_found(prev_id)  # an emulated provider keeps no state to ask instead

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


def _json(data: dict) -> Reply:
    return Reply(200, {}, orjson.dumps(data), data=data)


def retrieve(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str, query: dict[str, Any]
) -> tuple[Reply, Target]:
    record, target = _locate(svc, caller, headers, response_id)
    if record is not None and record.mode == BACKGROUND:
        if query.get("stream"):
            return svc.background.replay(record, query.get("starting_after")), target
        return _json(svc.background.current(record)), target
    if record is not None and record.mode == "emulated":
        if query.get("stream"):
            # As the API answers for a response that was not made in the background: nothing to replay.
            raise not_found_response(response_id)
        return _json(record.body), target
    reply = native.retrieve(svc.upstream, target, response_id, query, headers)
    if record is not None and reply.data is not None and record.body.get("conversation"):
        # The provider never saw the conversation: the gateway's record names it.
        reply.data["conversation"] = record.body["conversation"]
        reply.body = orjson.dumps(reply.data)
    return reply, target


def delete(svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str) -> tuple[Reply, Target]:
    """Delete at the provider (native), then in the store; also when the provider had already forgotten it."""
    record, target = _locate(svc, caller, headers, response_id)
    deleted = {"id": response_id, "object": "response", "deleted": True}
    if record is not None and record.mode != "native":
        svc.store.delete(caller.tenant, response_id)
        return _json(deleted), target
    reply = native.delete(svc.upstream, target, response_id, headers)
    if record is not None and (reply.status < 300 or reply.status == 404):
        svc.store.delete(caller.tenant, response_id)
        if reply.status == 404:
            reply = _json(deleted)
    return reply, target


def input_items(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str, query: dict[str, Any]
) -> tuple[Reply, Target]:
    record, target = _locate(svc, caller, headers, response_id)
    if record is not None and record.mode != "native":
        page = svc.store.input_items(
            caller.tenant, response_id, limit=query["limit"], order=query["order"], after=query.get("after")
        )
        if page is None:  # deleted between the two reads
            raise not_found_response(response_id)
        data, has_more = page
        data = [as_listed(item) for item in data]  # the API's item shapes, whatever short form was sent
        return _json(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": has_more,
            }
        ), target
    return native.input_items(svc.upstream, target, response_id, query, headers), target


def cancel(svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str) -> tuple[Reply, Target]:
    """POST /v1/responses/{id}/cancel: a live background response ends ``cancelled``, its output so far kept;
    a finished one is returned as it is. Raises InvalidRequest for a response not made in the background.
    """
    record, target = _locate(svc, caller, headers, response_id)
    if record is None:  # a response the provider made outside the gateway, for a caller with its own key
        return native.post(svc.upstream, target, native.path_of(response_id, "/cancel"), b"{}", headers), target
    if record.mode != BACKGROUND:
        raise InvalidRequest("Only responses created with background=true can be cancelled.", param="response_id")
    return _json(svc.background.cancel(record)), target


def models(
    svc: Services, caller: Caller, headers: Mapping[str, str], model_id: str | None, trace: Trace
) -> tuple[Reply, Target]:
    """GET /v1/models, or /v1/models/{model_id}: the provider's answer, with the routing's retries and fallbacks."""
    from . import models as provider_models

    def call(target: Target) -> Reply:
        if model_id is None:
            return provider_models.list_models(svc.upstream, target, headers)
        return provider_models.retrieve_model(svc.upstream, target, model_id, headers)

    return attempt(svc, svc.router.targets(headers, caller), call, trace)


# ------------------------------------------------------------------------------------------ compact, count
def _turn(
    svc: Services,
    caller: Caller,
    body: dict,
    *,
    keep: bool,
    memory: ConnectionMemory | None = None,
    generate: bool = True,
    run: Any = None,
) -> Turn:
    """A request as a Turn: its context (previous response or conversation) and its input, references
    resolved. Raises the 400s of a foreign compaction item before any provider is called.
    """
    prev_id, prev, conv_id, history = _context(svc, caller, body, memory)
    # Items of a conversation need ids even when the response itself is not kept.
    turn_input = _turn_input(svc, caller, body.get("input"), keep or conv_id is not None)
    compaction.expand(svc.sealer, caller.tenant, turn_input.items)
    return Turn(
        # The provider never sees a conversation id; copied only when there is one to take out.
        body={k: v for k, v in body.items() if k != "conversation"} if "conversation" in body else body,
        prev_id=prev_id,
        prev=prev,
        keep=keep,
        input=turn_input,
        conversation=conv_id,
        history=history,
        memory=memory,
        generate=generate,
        run=run,
    )


def _request_items(svc: Services, caller: Caller, body: dict) -> Turn:
    """A compact or count request as a Turn: nothing of it is kept, and every reference must resolve."""
    turn = _turn(svc, caller, body, keep=False)
    turn.input.check_resolved()
    return turn


def _stored_history(svc: Services, caller: Caller, turn: Turn) -> list[dict]:
    """The history the gateway holds for ``turn``: its conversation's, or its previous response chain's."""
    if turn.history is not None:
        return turn.history
    if turn.prev_id and turn.prev is None:
        raise _previous_not_found(turn.prev_id)  # the gateway cannot know what only a provider holds
    if turn.prev is None:
        return []
    return compaction.since_last(svc.store.chain_items(caller.tenant, turn.prev.id))


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
    history = _stored_history(svc, caller, turn)
    inlined = {k: v for k, v in body.items() if k != "previous_response_id"}
    inlined["input"] = compaction.expand(svc.sealer, caller.tenant, history + items)
    return orjson.dumps(inlined)


def compact(
    svc: Services, caller: Caller, headers: Mapping[str, str], body: dict, trace: Trace
) -> tuple[Reply, Target]:
    """POST /v1/responses/compact: the provider's own where the catalogue says it has one; otherwise the
    gateway asks the model for a summary and answers a ``response.compaction`` with its opaque item.
    """
    turn = _request_items(svc, caller, body)

    def call(target: Target) -> Reply:
        if target.provider.native and target.provider.compact:
            payload = _passed_through(svc, caller, turn, target)
            return native.post(svc.upstream, target, "/responses/compact", payload, headers)
        history = _stored_history(svc, caller, turn)
        items = compaction.expand(svc.sealer, caller.tenant, history + turn.input.items)
        if turn.body.get("instructions"):
            items = [{"type": "message", "role": "developer", "content": turn.body["instructions"]}, *items]
        if not items:
            raise InvalidRequest("There is nothing to compact: give input, a conversation or a previous response.")
        made = compaction.summarise(svc.upstream, target, turn.body["model"], items)
        if isinstance(made, Reply):
            return made
        summary, usage = made
        return _json(compaction.compacted(svc.sealer.item(caller.tenant, summary), usage))

    return attempt(svc, svc.router.targets(headers, caller), call, trace)


TOKEN_COUNT_HEADER = "x-gateway-token-count"  # "provider": counted by the provider; "estimate": offline


def input_tokens(
    svc: Services, caller: Caller, headers: Mapping[str, str], body: dict, trace: Trace
) -> tuple[Reply, Target]:
    """POST /v1/responses/input_tokens: the provider's own count where it has one (the Responses endpoint,
    or its own counting endpoint, translated); otherwise an offline count, marked as an estimate.
    """
    turn = _request_items(svc, caller, body)

    def call(target: Target) -> Reply:
        provider = target.provider
        if provider.native and provider.input_tokens:
            payload = _passed_through(svc, caller, turn, target)
            reply = native.post(svc.upstream, target, "/responses/input_tokens", payload, headers)
            reply.headers[TOKEN_COUNT_HEADER] = "provider"
            return reply
        history = compaction.expand(svc.sealer, caller.tenant, _stored_history(svc, caller, turn))
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
        reply = _json({"object": "response.input_tokens", "input_tokens": count})
        reply.headers[TOKEN_COUNT_HEADER] = source
        return reply

    return attempt(svc, svc.router.targets(headers, caller), call, trace)

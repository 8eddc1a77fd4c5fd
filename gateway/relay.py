"""What each endpoint does, in plain values: check ownership, pick the target, relay, keep the record."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from . import emulation, native, routing
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
from .observe import Trace
from .reply import Reply
from .routing import Target
from .schemas import MAX_BODY_DEPTH, check_depth
from .services import Services
from .store import StoredResponse, input_items_of

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


def _previous(svc: Services, caller: Caller, body: dict) -> tuple[str | None, StoredResponse | None]:
    """The request's previous_response_id and the caller's record of it (None: the provider may know it)."""
    prev_id = body.get("previous_response_id")
    if not prev_id:
        return None, None
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


def create(
    svc: Services, caller: Caller, headers: Mapping[str, str], body: dict, raw: bytes, trace: Trace | None = None
) -> tuple[Reply, Target]:
    """POST /v1/responses. ``body`` is the validated request, ``raw`` its bytes as received (for a quick
    nesting check; the parsed body is what is forwarded).

    Each target is tried in turn, with its retries; the first success answers. The record is written
    before the reply (or a stream's terminal event) leaves, so a follow-up turn on any worker or host
    finds it.
    """
    check_depth(body, raw, MAX_BODY_DEPTH)
    prev_id, prev = _previous(svc, caller, body)
    targets = svc.router.targets(headers, caller)
    keep = body.get("store") is not False
    turn = _turn_input(svc, caller, body.get("input"), keep)

    trace = trace or Trace(trace_id="", method="POST", path="/v1/responses")

    def call(target: Target) -> Reply:
        return _create_on(svc, caller, headers, body, target, prev_id, prev, keep, turn, trace)

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


def _create_on(
    svc: Services,
    caller: Caller,
    headers: Mapping[str, str],
    body: dict,
    target: Target,
    prev_id: str | None,
    prev: StoredResponse | None,
    keep: bool,
    turn: TurnInput,
    trace: Trace,
) -> Reply:
    """One try of the create on one target."""
    native_call = target.provider.native
    switched = native_call and prev is not None and prev.provider != target.provider.name
    if not native_call or switched:
        turn.check_resolved()  # an emulated provider keeps no items, a new one never saw these
    if target.override_params:
        body = {**body, **target.override_params}

    def record(response: dict) -> None:
        trace.usage_from(response)
        if not keep or not isinstance(response.get("id"), str):
            return
        if switched:
            response["previous_response_id"] = prev_id
        try:
            svc.store.record(
                tenant=caller.tenant,
                provider=target.provider.name,
                mode="native" if native_call else "emulated",
                response=response,
                input_items=turn.items,
            )
        except StoreUnavailable:
            # Raised on to the transport: a 503 instead of the 200, or an error event instead of the
            # stream's terminal one. Nothing unrecorded is acknowledged.
            trace.error = StoreUnavailable.code
            raise

    if not native_call:
        if prev_id and prev is None:
            raise _previous_not_found(prev_id)  # an emulated provider keeps no state to ask instead
        history = svc.store.chain_items(caller.tenant, prev.id) if prev is not None else []
        return emulation.create(
            svc.upstream,
            target,
            body,
            history=history,
            new_items=turn.items,
            previous_response_id=prev_id,
            on_final=record,
        )

    # The body the gateway checked (ownership of previous_response_id, store) is the body it forwards: the
    # parsed one, never the raw bytes, in which a duplicate key could say one thing to the gateway's parser
    # (the last value wins) and another to the provider's. Re-encoding costs microseconds with orjson;
    # rejecting duplicates would need a second, slower parse of every body.
    # References to items another provider made go as the items (see TurnInput).
    turn_input = turn.native_input(target.provider.name)
    if switched:
        # The new provider has never seen this conversation: send it the history, not an id it cannot know.
        history = svc.store.chain_items(caller.tenant, prev.id)
        if turn_input is None:
            turn_input = input_items_of(body.get("input"), mint=False)
        inlined = {k: v for k, v in body.items() if k != "previous_response_id"}
        inlined["input"] = history + turn_input
        payload = orjson.dumps(inlined)
    elif turn_input is not None:
        payload = orjson.dumps({**body, "input": turn_input})
    else:
        payload = orjson.dumps(body)
    reply = native.create(
        svc.upstream, target, payload, stream=bool(body.get("stream")), client_headers=headers, on_final=record
    )
    if reply.data is not None:
        record(reply.data)
        if switched:
            reply.body = orjson.dumps(reply.data)
    return reply


def _json(data: dict) -> Reply:
    return Reply(200, {}, orjson.dumps(data), data=data)


def retrieve(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str, query: dict[str, Any]
) -> tuple[Reply, Target]:
    record, target = _locate(svc, caller, headers, response_id)
    if record is not None and record.mode == "emulated":
        if query.get("stream"):
            # As the API answers for a response that was not made in the background: nothing to replay.
            raise not_found_response(response_id)
        return _json(record.body), target
    return native.retrieve(svc.upstream, target, response_id, query, headers), target


def delete(svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str) -> tuple[Reply, Target]:
    """Delete at the provider (native), then in the store; also when the provider had already forgotten it."""
    record, target = _locate(svc, caller, headers, response_id)
    deleted = {"id": response_id, "object": "response", "deleted": True}
    if record is not None and record.mode == "emulated":
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
    if record is not None and record.mode == "emulated":
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

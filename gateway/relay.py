"""What each endpoint does, in plain values: check ownership, pick the target, relay, keep the record."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from . import native, routing
from .auth import Caller
from .errors import InvalidRequest, NotFound, not_found_response
from .reply import Reply
from .routing import Target
from .services import Services
from .store import StoredResponse, input_items_of

log = logging.getLogger("gateway")


def _native_only(target: Target) -> None:
    if not target.provider.native:
        raise InvalidRequest(
            f"Provider '{target.provider.name}' speaks only Chat Completions; the gateway's Responses API "
            "emulation for such providers is not available yet.",
            param="x-portkey-provider",
            code="unsupported_provider",
        )


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
    target = routing.targets(headers, caller, svc.catalogue)[0]
    _native_only(target)
    return None, target


def create(svc: Services, caller: Caller, headers: Mapping[str, str], body: dict, raw: bytes) -> tuple[Reply, Target]:
    """POST /v1/responses. ``body`` is the validated request, ``raw`` its bytes as received.

    The record is written before the reply (or a stream's terminal event) leaves, so a follow-up turn on
    any worker or host finds it.
    """
    prev_id = body.get("previous_response_id")
    prev = None
    if prev_id:
        try:
            prev = _owned(svc, caller, prev_id)
        except NotFound:
            raise InvalidRequest(
                f"Previous response with id '{prev_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            ) from None
    target = routing.targets(headers, caller, svc.catalogue)[0]
    _native_only(target)

    payload = raw
    switched = prev is not None and prev.provider != target.provider.name
    if switched:
        # The new provider has never seen this conversation: send it the history, not an id it cannot know.
        history = svc.store.chain_items(caller.tenant, prev.id)
        inlined = {k: v for k, v in body.items() if k != "previous_response_id"}
        inlined["input"] = history + input_items_of(body.get("input"), mint=False)
        payload = orjson.dumps(inlined)

    keep = body.get("store") is not False
    # Ids are minted only for what will be kept; nothing is allocated for `store: false` traffic.
    new_items = input_items_of(body.get("input")) if keep else []

    def record(response: dict) -> None:
        if not keep or not isinstance(response.get("id"), str):
            return
        if switched:
            response["previous_response_id"] = prev_id
        try:
            svc.store.record(
                tenant=caller.tenant,
                provider=target.provider.name,
                mode="native",
                response=response,
                input_items=new_items,
            )
        except Exception:
            # The caller still gets the answer it paid for; the log says why a later GET may miss it.
            log.exception("could not record response %s", response.get("id"))

    reply = native.create(
        svc.upstream, target, payload, stream=bool(body.get("stream")), client_headers=headers, on_final=record
    )
    if reply.data is not None:
        record(reply.data)
        if switched:
            reply.body = orjson.dumps(reply.data)
    return reply, target


def retrieve(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str, query: dict[str, Any]
) -> tuple[Reply, Target]:
    _, target = _locate(svc, caller, headers, response_id)
    return native.retrieve(svc.upstream, target, response_id, query, headers), target


def delete(svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str) -> tuple[Reply, Target]:
    """Delete at the provider, then in the store (also when the provider had already forgotten it)."""
    record, target = _locate(svc, caller, headers, response_id)
    reply = native.delete(svc.upstream, target, response_id, headers)
    if record is not None and (reply.status < 300 or reply.status == 404):
        svc.store.delete(caller.tenant, response_id)
        if reply.status == 404:
            deleted = {"id": response_id, "object": "response", "deleted": True}
            reply = Reply(200, {}, orjson.dumps(deleted), data=deleted)
    return reply, target


def input_items(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str, query: dict[str, Any]
) -> tuple[Reply, Target]:
    _, target = _locate(svc, caller, headers, response_id)
    return native.input_items(svc.upstream, target, response_id, query, headers), target

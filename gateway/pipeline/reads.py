"""Reads beside the pipeline: retrieve, delete, input items, cancel, models."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from .. import native
from ..auth import Caller
from ..call import BACKGROUND
from ..errors import (
    InvalidRequest,
    NotFound,
    not_found_response,
)
from ..items import as_listed, list_page
from ..observe import Trace
from ..reply import Reply, json_ok
from ..routing import Target
from .attempt import attempt
from .resolve import locate

if TYPE_CHECKING:
    from ..services import Services


def _located(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str
) -> tuple[Any, Target, Reply | None]:
    """``locate``, and for another tenant's id asked by a caller with its own provider key, the 404 to give.

    That caller's id the store has never seen goes to the provider, whose 404 comes back with its headers
    (and the gateway's). Another tenant's id must look the same in every header, so the provider is asked
    about it too, and its 404 given; an answer other than 404 (a key of the same provider account) is never
    given: the record is another tenant's.
    """
    try:
        record, target = locate(svc, caller, headers, response_id)
        return record, target, None
    except NotFound:
        if caller.provider_key is None:
            raise
        target = svc.router.targets(headers, caller)[0]
        if not target.provider.native:
            raise
    probe = native.retrieve(svc.upstream, target, response_id, {}, headers)
    if probe.status != 404:
        missing = not_found_response(response_id)
        probe = Reply(404, probe.headers, orjson.dumps(missing.body()))
    return None, target, probe


def retrieve(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str, query: dict[str, Any]
) -> tuple[Reply, Target]:
    record, target, missing = _located(svc, caller, headers, response_id)
    if missing is not None:
        return missing, target
    if record is not None and record.mode == BACKGROUND:
        if query.get("stream"):
            return svc.background.replay(record, query.get("starting_after")), target
        return json_ok(svc.background.current(record)), target
    if record is not None and record.mode == "emulated":
        if query.get("stream"):
            # As the API answers for a response that was not made in the background: nothing to replay.
            raise not_found_response(response_id)
        return json_ok(record.body), target
    reply = native.retrieve(svc.upstream, target, response_id, query, headers)
    if record is not None and reply.data is not None:
        # The provider never saw the conversation, nor a prompt template the gateway expanded: the record names them.
        kept = {name: record.body[name] for name in _GATEWAYS_OWN if record.body.get(name)}
        if kept:
            reply.data.update(kept)
            reply.body = orjson.dumps(reply.data)
    return reply, target


_GATEWAYS_OWN = ("conversation", "prompt")


def delete(svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str) -> tuple[Reply, Target]:
    """Delete at the provider (native), then in the store; also when the provider had already forgotten it."""
    record, target, missing = _located(svc, caller, headers, response_id)
    if missing is not None:
        return missing, target
    deleted = {"id": response_id, "object": "response", "deleted": True}
    if record is not None and record.mode != "native":
        svc.store.delete(caller.tenant, response_id)
        return json_ok(deleted), target
    reply = native.delete(svc.upstream, target, response_id, headers)
    if record is not None and (reply.status < 300 or reply.status == 404):
        svc.store.delete(caller.tenant, response_id)
        if reply.status == 404:
            reply = json_ok(deleted)
    return reply, target


def input_items(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str, query: dict[str, Any]
) -> tuple[Reply, Target]:
    record, target, missing = _located(svc, caller, headers, response_id)
    if missing is not None:
        return missing, target
    if record is not None and record.mode != "native":
        page = svc.store.input_items(
            caller.tenant, response_id, limit=query["limit"], order=query["order"], after=query.get("after")
        )
        if page is None:  # deleted between the two reads
            raise not_found_response(response_id)
        data, has_more = page
        data = [as_listed(item) for item in data]  # the API's item shapes, whatever short form was sent
        return json_ok(list_page(data, has_more)), target
    return native.input_items(svc.upstream, target, response_id, query, headers), target


def cancel(svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str) -> tuple[Reply, Target]:
    """POST /v1/responses/{id}/cancel: a live background response ends ``cancelled``, its output so far kept;
    a finished one is returned as it is. Raises InvalidRequest for a response not made in the background.
    """
    record, target, missing = _located(svc, caller, headers, response_id)
    if missing is not None:
        return missing, target
    if record is None:  # a response the provider made outside the gateway, for a caller with its own key
        return native.post(svc.upstream, target, native.path_of(response_id, "/cancel"), b"{}", headers), target
    if record.mode != BACKGROUND:
        raise InvalidRequest("Only responses created with background=true can be cancelled.", param="response_id")
    return json_ok(svc.background.cancel(record)), target


def models(
    svc: Services, caller: Caller, headers: Mapping[str, str], model_id: str | None, trace: Trace
) -> tuple[Reply, Target]:
    """GET /v1/models, or /v1/models/{model_id}: the provider's answer, with the routing's retries and fallbacks."""
    from .. import models as provider_models

    policy = svc.limits.policy_for(caller) if svc.limits.active else None
    if policy is not None and policy.models is not None and model_id is not None and not policy.allows_model(model_id):
        raise NotFound(f"The model '{model_id}' does not exist or you do not have access to it.", param="model")

    def call(target: Target) -> Reply:
        if model_id is None:
            return provider_models.list_models(svc.upstream, target, headers)
        return provider_models.retrieve_model(svc.upstream, target, model_id, headers)

    reply, target = attempt(svc, svc.router.targets(headers, caller), call, trace)
    if policy is not None and policy.models is not None and model_id is None and isinstance(reply.data, dict):
        # A key limited to some models lists only those.
        data = [m for m in reply.data.get("data") or [] if isinstance(m, dict) and policy.allows_model(m.get("id"))]
        reply.data = {**reply.data, "data": data}
        reply.body = orjson.dumps(reply.data)
    return reply, target

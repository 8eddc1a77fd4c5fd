"""Resolve: a request's context (previous response, conversation, item references) as a Turn.

Unknown and foreign ids fail here, before any provider is paid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from .. import compaction, routing
from ..auth import Caller
from ..call import Turn
from ..errors import (
    InvalidRequest,
    NotFound,
    conversation_not_found,
    not_found_response,
)
from ..items import TurnInput, input_items_of, references
from ..routing import Target
from ..store import StoredResponse

if TYPE_CHECKING:
    from ..services import Services


def owned(svc: Services, caller: Caller, response_id: str) -> StoredResponse | None:
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


def locate(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str
) -> tuple[StoredResponse | None, Target]:
    """The caller's record (see ``owned``) and the provider to ask: the one that made the record (the
    header may then be left out), else the one the header names.
    """
    record = owned(svc, caller, response_id)
    if record is not None:
        return record, routing.target_for(routing.provider_named(svc.catalogue, record.provider), caller)
    target = svc.router.targets(headers, caller)[0]
    if not target.provider.native:
        raise not_found_response(response_id)  # an emulated response exists only in the store
    return None, target


def _previous(
    svc: Services, caller: Caller, body: dict, source: Any = None
) -> tuple[str | None, StoredResponse | None]:
    """The request's previous_response_id and the caller's record of it (None: the provider may know it),
    from the door's context source when it holds it (a connection's memory), else from the store.
    """
    prev_id = body.get("previous_response_id")
    if not prev_id:
        return None, None
    held = source.get(prev_id) if source is not None else None
    if held is not None:
        return prev_id, held
    try:
        return prev_id, owned(svc, caller, prev_id)
    except NotFound:
        raise previous_not_found(prev_id) from None


def previous_not_found(prev_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Previous response with id '{prev_id}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


def _turn_input(svc: Services, caller: Caller, request_input: Any, keep: bool) -> TurnInput:
    """The request's input items, references resolved with one store query (none when there are none).

    Raises InvalidRequest for a reference without an id, for one to another tenant's item (the same 400 as
    for an unknown id), and for one the store does not hold for a caller whose credentials others share (a
    gateway key): the provider could not tell whose item it is. As with ``owned``, only a caller with its
    own provider key may have an id the store has never seen sent on to the provider.
    """
    # Ids are minted only for what will be kept: `store: false` traffic mints none.
    items = input_items_of(request_input, mint=keep)
    wanted = references(items)
    if not wanted:
        return TurnInput(request_input, items)
    found = svc.store.items_by_id(caller.tenant, wanted.values())
    # Each reference becomes a copy of the item it names, recorded and sent: 700 references to one 1 MB
    # item wrote 700 MB. This turn's input, once expanded, is held to the request body's own limit (the
    # history it continues is not counted: that is the store's, and bounded when it was written).
    limit = svc.settings.max_body_bytes
    size = sum(len(orjson.dumps(found[i].item)) for i in wanted.values() if found.get(i) is not None)
    if size > limit:
        raise InvalidRequest(
            f"The input's item references expand to {size} bytes, more than the {limit} bytes a request may "
            "carry (the gateway's max_body_bytes setting); refer to fewer or smaller items.",
            param="input",
            code="input_too_large",
        )
    turn = TurnInput.resolve(request_input, items, wanted, found)
    if caller.provider_key is None:
        turn.check_resolved()
    return turn


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


def _context(
    svc: Services, caller: Caller, body: dict, source: Any = None
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
    prev_id, prev = _previous(svc, caller, body, source)
    history = None
    if conv_id is not None:
        history = svc.store.conversations.context(caller.tenant, conv_id)
        if history is None:
            raise conversation_not_found(conv_id, "conversation")
        history = compaction.since_last(history)
    return prev_id, prev, conv_id, history


def resolve_turn(
    svc: Services,
    caller: Caller,
    body: dict,
    *,
    keep: bool,
    source: Any = None,
    sinks: tuple = (),
    generate: bool = True,
    keeper: Any = None,
) -> Turn:
    """A request as a Turn: its context (previous response or conversation) and its input, references
    resolved. Raises the 400s of a foreign compaction item before any provider is called.
    """
    prev_id, prev, conv_id, history = _context(svc, caller, body, source)
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
        source=source,
        sinks=sinks,
        generate=generate,
        keeper=keeper,
    )


def request_items(svc: Services, caller: Caller, body: dict) -> Turn:
    """A compact or count request as a Turn: nothing of it is kept, and every reference must resolve."""
    turn = resolve_turn(svc, caller, body, keep=False)
    turn.input.check_resolved()
    return turn


def stored_history(svc: Services, caller: Caller, turn: Turn) -> list[dict]:
    """The history the gateway holds for ``turn``: its conversation's, or its previous response chain's."""
    if turn.history is not None:
        return turn.history
    if turn.prev_id and turn.prev is None:
        raise previous_not_found(turn.prev_id)  # the gateway cannot know what only a provider holds
    if turn.prev is None:
        return []
    return compaction.since_last(svc.store.chain_items(caller.tenant, turn.prev.id))

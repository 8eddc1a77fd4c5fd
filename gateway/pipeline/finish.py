"""Finish: the final response amended, then handed to the sinks in order (the store, or a background run's,
then a connection's memory). The store's commit comes before the answer or the stream's terminal event;
StoreUnavailable travels up unchanged (a 503, or an error event in place of the terminal one).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..auth import Caller
from ..call import Turn
from ..errors import StoreUnavailable
from ..items import mint_item_id
from ..observe import Trace
from .plan import Plan, amend

if TYPE_CHECKING:
    from ..services import Services

# Response statuses whose items join their conversation: the turn ended and the caller builds on it.
_APPENDED = frozenset({"completed", "incomplete"})


@dataclasses.dataclass(slots=True)
class Finished:
    """What a sink is handed with a final response: whose it is, who made it, and what it answered."""

    tenant: str
    provider: str
    mode: str  # "native" or "emulated"
    input_items: list[dict]  # this turn's items as recorded
    conversation: str | None  # the conversation the turn joins (None: none, or the turn did not end)
    keep: bool  # the caller asked for the response to be stored
    before: list[dict] | None  # the conversation before this turn (None: only the store knows it)
    cost: Decimal | None = None  # what the response cost in USD (None: unknown, or not charged)


def store_take(store: Any, response: dict, done: Finished) -> None:
    """The store as the sink: the response and its items, or (``store: false``) only its conversation's turn."""
    if not done.keep:
        if done.conversation is not None:
            store.conversations.append_turn(
                done.tenant, done.conversation, response["id"], done.input_items, _output_items(response)
            )
        return
    store.record(
        tenant=done.tenant,
        provider=done.provider,
        mode=done.mode,
        response=response,
        input_items=done.input_items,
        conversation=done.conversation,
        cost=done.cost,
    )


def finisher(svc: Services, caller: Caller, turn: Turn, plan: Plan, trace: Trace) -> Callable[[dict], None]:
    """The function the adapter calls with the final response, before the answer leaves.

    Every final response is charged here (a usage row, whether it is kept or not, failed ones too), before
    the store: the provider was paid even when the record cannot be written. Not a warm-up's (no provider
    was asked), nor a call inside a response an extension makes of several (``turn.charge``).
    """
    conv = turn.conversation
    # A keeper (a background run) keeps the record itself, with its last events; otherwise the store does.
    keeper, store = turn.keeper, svc.store
    charged = turn.charge and turn.generate

    def charge(response: dict) -> Decimal | None:
        model = response.get("model") or turn.body.get("model")
        return svc.spend.charge(
            caller,
            trace,
            plan.target.provider,
            response.get("usage"),
            model=model,
            response_id=response.get("id"),
            status=response.get("status"),
            service_tier=response.get("service_tier"),
        )

    def finish(response: dict) -> None:
        trace.usage_from(response)
        if not isinstance(response.get("id"), str):
            if charged:
                charge(response)
            return
        appended = conv is not None and response.get("status") in _APPENDED
        amend(turn, plan, response)
        cost = charge(response) if charged else None
        done = Finished(
            tenant=caller.tenant,
            provider=plan.target.provider.name,
            mode=plan.mode,
            input_items=plan.recorded_input,
            conversation=conv if appended else None,
            keep=turn.keep,
            before=plan.before,
            cost=cost,
        )
        if turn.keep or appended:
            try:
                if keeper is not None:
                    keeper.take(response, done)
                else:
                    store_take(store, response, done)
            except StoreUnavailable:
                # Nothing unrecorded is acknowledged.
                trace.error = StoreUnavailable.code
                raise
        for sink in turn.sinks:
            sink.take(response, done)

    return finish


def _output_items(response: dict) -> list[dict]:
    out = []
    for item in response.get("output") or []:
        if isinstance(item, dict):
            out.append(item if isinstance(item.get("id"), str) else {**item, "id": mint_item_id(item)})
    return out

"""Plan and send: what one target is sent for a turn, then its adapter (native pass-through or emulation).

A native provider continues by id only a response it made and kept itself; otherwise it is sent the
conversation (another provider's, one the gateway made, or one only a connection's memory holds).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .. import compaction, emulation, native
from ..auth import Caller
from ..call import Outgoing, Turn
from ..items import input_items_of
from ..reply import Reply
from ..routing import Target
from .resolve import previous_not_found

if TYPE_CHECKING:
    from ..services import Services


@dataclasses.dataclass(slots=True)
class Plan:
    """What one target is sent for a turn, and what its record will say. Extensions' ``plan`` may change it."""

    target: Target
    native: bool  # the provider's own Responses API is called (not emulated, and generating)
    switched: bool  # the provider is sent the conversation, not the previous response's id
    body: dict  # the request as this target gets it (override params, stream forced for a run)
    history: list[dict]  # the conversation before this turn, as the provider is sent it
    new_items: list[dict]  # this turn's items, as the provider is sent them
    recorded_input: list[dict]  # this turn's items, as they are recorded
    before: list[dict] | None  # the conversation before this turn, for a connection's memory (None: the store)

    @property
    def mode(self) -> str:
        return "native" if self.native else "emulated"


def make_plan(svc: Services, caller: Caller, turn: Turn, target: Target) -> Plan:
    """The plan for ``target``; raises InvalidRequest for items or a previous response it cannot be sent."""
    body, prev, source = turn.body, turn.prev, turn.source
    native_call = target.provider.native and turn.generate
    switched = (
        native_call
        and prev is not None
        and (
            prev.provider != target.provider.name
            or prev.mode != "native"
            or (source is not None and source.unstored(prev.id))
        )
    )
    if not native_call or switched or turn.conversation is not None:
        turn.input.check_resolved()  # an emulated provider keeps no items, a new one never saw these
    if target.override_params:
        body = {**body, **target.override_params}
    if turn.prompt is not None and not native_call:
        # The response the gateway makes echoes its body's prompt; the emulation never sends it on.
        body = {**body, "prompt": turn.prompt}
    if turn.keeper is not None:
        # A keeper (a background run) reads its provider's stream whatever the client asked: its events are
        # stored as they come. The provider is not asked to run it in the background itself.
        body = {**body, "stream": True}
        if native_call:
            body = {k: v for k, v in body.items() if k != "background"}
    history: list[dict] = []
    read = turn.history is not None or prev is None  # the conversation before this turn is known here
    if turn.history is not None:
        history = turn.history
    elif prev is not None and (
        not native_call
        or switched
        or compaction.by_gateway(body, target.provider, native_call)
        or (compaction.trigger_index(turn.input.items) is not None and not target.provider.compact)
        or (source is not None and not turn.keep)
    ):
        # (A response only the door's source will hold needs the conversation before it.)
        history = compaction.since_last(_history(svc, caller, prev.id, turn))
        read = True
    if not native_call and turn.prev_id and prev is None:
        raise previous_not_found(turn.prev_id)  # an emulated provider keeps no state to ask instead
    return Plan(
        target=target,
        native=native_call,
        switched=switched,
        body=body,
        history=history,
        new_items=turn.input.items,
        recorded_input=turn.input.items,
        before=history if read else None,
    )


def _history(svc: Services, caller: Caller, response_id: str, turn: Turn) -> list[dict]:
    """The conversation up to and including ``response_id``: from the connection's memory, else the store."""
    held = turn.source.context(response_id) if turn.source is not None else None
    return held if held is not None else svc.store.chain_items(caller.tenant, response_id)


def send(
    svc: Services,
    caller: Caller,
    headers: Mapping[str, str],
    turn: Turn,
    plan: Plan,
    finish: Callable[[dict], None],
) -> Reply:
    """What the plan says, sent through its target's adapter; ``finish`` gets the final response before the
    answer leaves.
    """
    conv, keeper, target = turn.conversation, turn.keeper, plan.target
    history = compaction.expand(svc.sealer, caller.tenant, plan.history, "conversation" if conv else "input")
    adapter = native if plan.native else emulation
    if plan.native:
        body, sent_items = _native_body(svc, caller, turn, plan, history), []
    else:
        body = {**plan.body, "conversation": {"id": conv}} if conv is not None else plan.body
        sent_items = compaction.expand(svc.sealer, caller.tenant, plan.new_items)

    out = Outgoing(
        target=target,
        body=body,
        history=history,
        new_items=sent_items,
        previous_response_id=turn.prev_id,
        response_id=keeper.response_id if keeper is not None else None,
        client_headers=headers,
        amend=functools.partial(amend, turn, plan)
        if plan.native and (conv is not None or plan.switched or keeper is not None or turn.prompt is not None)
        else None,
    )
    return adapter.create(svc.upstream, out, finish)


def amend(turn: Turn, plan: Plan, response: dict) -> None:
    """The gateway's own fields on a response the client sees and the store keeps."""
    if turn.conversation is not None:
        response["conversation"] = {"id": turn.conversation}
    if plan.switched:  # the provider was sent the conversation, not the id: the client's events name it
        response["previous_response_id"] = turn.prev_id
    if turn.keeper is not None:  # the client knows the run by the id the gateway gave it when queueing it
        response["id"] = turn.keeper.response_id
        response["background"] = True
    if turn.prompt is not None:  # the provider was sent the template expanded, not the prompt
        response["prompt"] = turn.prompt


def _native_body(svc: Services, caller: Caller, turn: Turn, plan: Plan, history: list[dict]) -> dict:
    """The request a native provider is sent: the history inlined where the provider cannot know it, and
    references to items another provider made sent as the items (see TurnInput).
    """
    body = plan.body
    turn_input = turn.input.native_input(plan.target.provider.name)
    if plan.new_items is not turn.input.items:  # compacted: the gateway's items, not the caller's
        turn_input = [{k: v for k, v in i.items() if k != "id"} for i in plan.new_items]
    if turn_input is None and compaction.has_ours(turn.input.items):
        turn_input = input_items_of(body.get("input"), mint=False)
    if turn_input is not None:
        turn_input = compaction.expand(svc.sealer, caller.tenant, turn_input)
    if plan.switched or turn.conversation is not None:
        # The provider has never seen this conversation: send it the history, not an id it cannot know.
        if turn_input is None:
            turn_input = input_items_of(body.get("input"), mint=False)
        inlined = {k: v for k, v in body.items() if k != "previous_response_id"}
        inlined["input"] = history + turn_input
        return inlined
    if turn_input is not None:
        return {**body, "input": turn_input}
    return body

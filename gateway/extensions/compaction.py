"""Compaction inside a turn, where the provider does not compact itself.

- Auto-compaction (``context_management`` with a ``compact_threshold``): past the threshold, the gateway has
  the model summarise the history and sends the summary instead.
- ``compaction_trigger`` as the last input item (Codex's remote compaction): the response's one output is
  a compaction item of the whole context, made as ``/v1/responses/compact`` makes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from .. import compaction, emulation
from ..call import Context, Turn
from ..emulation import response as build
from ..emulation.request import not_in
from ..emulation.stream import StreamTranslator
from ..errors import GatewayError, InvalidRequest
from ..reply import Reply
from ..tokens import count_offline


class AutoCompaction:
    def plan(self, ctx: Context, turn: Turn, plan: Any, finish: Callable[[dict], None]) -> Reply | None:
        if not compaction.by_gateway(plan.body, plan.target.provider, plan.native):
            return None
        # The provider never sees the request for compaction it does not do itself.
        plan.body = {k: v for k, v in plan.body.items() if k != "context_management"}
        made = _compact(ctx, plan.target, turn, plan.history, turn.input.items)
        if isinstance(made, Reply):
            return made
        plan.history, plan.new_items, item = made
        if item is not None:
            plan.before = []  # the recorded input opens with the compaction item
            plan.recorded_input = [item, *turn.input.items]
            if turn.prev is not None and plan.native and not plan.switched:
                plan.switched = True  # the provider is sent the compacted history, not an id meaning all of it
        return None


def _estimate(model: str, items: list[dict]) -> int:
    try:
        chat = emulation.request.to_chat({"model": model}, items, [], max_tokens_param="max_tokens", found=[])
    except GatewayError:  # items Chat Completions cannot carry: their JSON is counted instead
        chat = {"messages": [{"role": "user", "content": orjson.dumps(items).decode()}]}
    return count_offline(model, chat)[0]


def _compact(
    ctx: Context, target: Any, turn: Turn, history: list[dict], new: list[dict]
) -> tuple[list[dict], list[dict], dict | None] | Reply:
    """(history, new items, the compaction item to record) once ``context_management`` asks for compaction
    past its threshold; a provider's error as a Reply.

    With stored history (a conversation, a previous response), all of it is summarised, at the start of a
    user turn only (never between a tool call and its output); the item then opens this turn's recorded
    input, so later turns start from it. Without, the caller's own items before its last user message are
    summarised for this call; the caller keeps its items (``/v1/responses/compact`` gives it an item to keep).
    """
    threshold = compaction.threshold(turn.body)
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
    svc, tenant = ctx.svc, ctx.caller.tenant
    made = compaction.summarise(svc.upstream, target, model, compaction.expand(svc.sealer, tenant, prefix))
    if isinstance(made, Reply):
        return made
    # The summary is a call of its own, charged on its own: the response that follows is charged at finish.
    usage = build.usage(made[1])
    svc.spend.charge(ctx.caller, ctx.trace, target.provider, usage, model=model, status="completed", kind="compaction")
    item = svc.sealer.item(tenant, made[0])
    if history:
        return [item], rest, item
    return [], [item, *rest], None


class CompactionTrigger:
    def plan(self, ctx: Context, turn: Turn, plan: Any, finish: Callable[[dict], None]) -> Reply | None:
        items = plan.new_items
        where = compaction.trigger_index(items)
        if where is None:
            return None
        if where != len(items) - 1:
            raise InvalidRequest("A compaction_trigger item must be the last input item.", param=f"input[{where}]")
        if plan.native and plan.target.provider.compact:
            return None  # the provider compacts itself
        svc, tenant = ctx.svc, ctx.caller.tenant
        context = compaction.expand(svc.sealer, tenant, plan.history + not_in(items[:-1], plan.history))
        made = compaction.summarise(svc.upstream, plan.target, turn.body["model"], context)
        if isinstance(made, Reply):
            return made
        summary, usage = made
        plan.native = False  # the gateway made this response: a native provider could not continue it by id
        return _answer(plan.body, turn.prev_id, svc.sealer.item(tenant, summary), usage, finish)


def _answer(body: dict, previous_response_id: str | None, item: dict, usage: dict, finish: Callable) -> Reply:
    """The completed Response whose one output is ``item``, kept by ``finish`` first; as events for a stream."""
    body = {k: v for k, v in body.items() if k != "context_management"}
    translator = StreamTranslator(build.skeleton(body, build.new_id("resp"), int(time.time()), previous_response_id))
    opening = translator.start()
    translator.response["output"].append(item)
    index = {"output_index": 0}
    made = [
        translator.event({"type": "response.output_item.added", **index, "item": item}),
        translator.event({"type": "response.compaction.compacting", **index, "item_id": item["id"]}),
        translator.event({"type": "response.output_item.done", **index, "item": item}),
    ]
    translator.finish_reason, translator.usage = "stop", usage
    final, closing = translator.complete()
    finish(final)
    if body.get("stream"):
        return Reply(200, {}, stream=iter(opening + made + closing), primed=True)
    return Reply(200, {}, orjson.dumps(final), data=final)

"""``truncation: "auto"`` where the gateway sends the history itself: the oldest turns are left out so that the
request fits the model's context window (``context_window`` in the provider's catalogue entry).

Only what the provider is sent changes: the turn is recorded whole, so a later turn on a bigger model sees
everything. A native provider continuing by ``previous_response_id`` holds the history, not the gateway: it
is sent ``truncation`` as given and truncates itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .. import compaction, emulation
from ..call import Context, Turn
from ..errors import GatewayError
from ..providers import Provider
from ..reply import Reply
from ..tokens import count_offline

# The room kept for the answer when the request does not say (``max_output_tokens``): a quarter of the
# window, at most this many tokens.
RESERVE_MAX = 4096
# What the count of a Response request takes from its body: the rest does not reach the model as tokens.
_COUNTED = ("model", "instructions", "tools", "text")


class Truncation:
    def plan(self, ctx: Context, turn: Turn, plan: Any, finish: Callable[[dict], None]) -> Reply | None:
        if plan.body.get("truncation") != "auto":
            return None  # the one look-up a request that does not ask for it costs
        ctx.trace.truncated_items = None  # a target tried before this one may have truncated
        if not plan.history or (plan.native and not plan.switched and turn.conversation is None):
            return None  # nothing held before this turn, or the provider holds it (it is sent truncation)
        model = plan.body.get("model")
        window = plan.target.provider.window(model) if isinstance(model, str) else None
        if window is None:
            return None
        svc, tenant = ctx.svc, ctx.caller.tenant
        # The gateway's compaction items reach the provider as their summaries: those are what is counted.
        history = compaction.expand(svc.sealer, tenant, plan.history, "conversation" if turn.conversation else "input")
        new = compaction.expand(svc.sealer, tenant, plan.new_items)
        cut = leave_out(plan.target.provider, plan.body, history, new, window)
        if cut:
            # A new list: the plan's ``before`` (a connection's memory of the conversation) keeps all of it.
            plan.history = plan.history[cut:]
            ctx.trace.truncated_items = cut
        return None


def leave_out(provider: Provider, body: dict, history: list[dict], new: list[dict], window: int) -> int:
    """How many of the oldest ``history`` items to leave out so that the request and room for its answer fit
    ``window`` (0: it fits as it is). Whole turns only (see ``cuts``); when even leaving out every turn it
    may does not make it fit, as many as it may: the provider answers the rest (its context error).
    """
    reserve = body.get("max_output_tokens")
    if not isinstance(reserve, int) or isinstance(reserve, bool):
        reserve = min(window // 4, RESERVE_MAX)
    model = body["model"]
    counted = {k: body[k] for k in _COUNTED if k in body}
    over = _tokens(provider, counted, history, new) + reserve - window
    if over <= 0:
        return 0
    places = cuts(history, new)
    if not places:
        return 0
    # Each turn that may go is counted alone, once; the framing a chat body costs once is not its own.
    framing = count_offline(model, {"messages": []})[0]
    start = 0
    for place in places:
        over -= _tokens(provider, {"model": model}, history[start:place], []) - framing
        start = place
        if over <= 0:
            break
    return start


def cuts(history: list[dict], new: list[dict]) -> list[int]:
    """Where ``history`` may be cut (the items before the cut left out), in order: where a user turn begins
    (a user message, or this turn's input after the whole history), never between a call and its output
    (``new`` may answer a call of the history), nor after a reasoning item (it belongs to the item after it).
    """
    n = len(history)
    # No cut from just after a call to its output: a difference array over the history's places.
    inside = [0] * (n + 2)
    calls: dict[str, int] = {}  # the latest call of each id (a model may use an id again in a later turn)
    for i, item in enumerate([*history, *new]):
        tie = _tie(item)
        if tie is None:
            continue
        key, answers = tie
        if not answers:
            calls[key] = i
        elif (call := calls.get(key)) is not None and call < n:
            inside[call + 1] += 1
            inside[min(i, n) + 1] -= 1
    places, depth = [], 0
    for i in range(1, n + 1):
        depth += inside[i]
        starts = i == n or _is_user(history[i])
        if starts and depth == 0 and history[i - 1].get("type") != "reasoning":
            places.append(i)
    return places


def _is_user(item: dict) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "user"


def _tie(item: dict) -> tuple[str, bool] | None:
    """What ties a call to its output, and whether ``item`` is the output: ``call_id`` (a local shell call's
    output names its call by ``id``), or an MCP approval request's id and the response that answers it.
    """
    kind = item.get("type")
    if kind == "mcp_approval_request":
        key, answers = item.get("id"), False
    elif kind == "mcp_approval_response":
        key, answers = item.get("approval_request_id"), True
    else:
        answers = isinstance(kind, str) and kind.endswith("_output")
        key = item.get("call_id") or (item.get("id") if kind == "local_shell_call_output" else None)
    return (key, answers) if isinstance(key, str) else None


def _tokens(provider: Provider, body: dict, history: list[dict], new: list[dict]) -> int:
    """The offline count of what a chat provider would be sent, as compaction's estimate counts it."""
    try:
        chat = emulation.request.to_chat(
            body,
            history,
            new,
            max_tokens_param=provider.max_tokens_param,
            reasoning_field=provider.reasoning_field,
            found=[],
        )
    except GatewayError:  # items Chat Completions cannot carry (a native provider's): their JSON is counted
        messages = [{"role": "user", "content": orjson.dumps([*history, *new]).decode()}]
        if body.get("instructions"):
            messages.insert(0, {"role": "system", "content": str(body["instructions"])})
        chat = {"messages": messages, "tools": body.get("tools")}
    return count_offline(body["model"], chat)[0]

"""Create: a prompt template expanded, resolve, the extensions' ``before``, route, the extensions' ``around``
the attempt stage, attempt (per target: plan, the extensions' ``plan``, send), finish (in ``send``'s adapter,
through the sinks).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import prompts
from ..call import Call, Context, Turn
from ..emulation import OMITTED_HEADER
from ..errors import StoreUnavailable
from ..observe import Trace
from ..reply import Reply
from ..routing import Target
from .attempt import attempt
from .finish import finisher
from .plan import make_plan, send
from .resolve import resolve_turn

if TYPE_CHECKING:
    from ..services import Services


def create(svc: Services, call: Call) -> tuple[Reply, Target]:
    """POST /v1/responses, from any door. ``call.body`` is the validated request, parsed by
    ``schemas.json_object`` (so nested no deeper than the store can keep); the parsed body is what is forwarded.

    Each target is tried in turn, with its retries; the first success answers. The record is written
    before the reply (or a stream's terminal event) leaves, so a follow-up turn on any worker or host
    finds it. With a ``conversation``, its items are the context, and the turn's items join it in that
    same write, when the response completes. What a door adds (a context source, sinks, a keeper) is
    described on ``call.Call``.
    """
    body = call.body
    unexpanded = foreign = None  # foreign: a prompt whose id the gateway does not hold, for providers that do
    if "prompt" in body:  # the one lookup a request without a prompt template pays
        body = svc.prompts.expand(body)
        if body is call.body:
            foreign = body["prompt"]
        else:
            unexpanded = call.body
    turn = resolve_turn(
        svc,
        call.caller,
        body,
        keep=body.get("store") is not False,
        source=call.source,
        sinks=call.sinks,
        generate=call.generate,
        keeper=call.keeper,
    )
    if unexpanded is not None:
        turn = dataclasses.replace(turn, prompt=unexpanded["prompt"], unexpanded=unexpanded)
    if (turn.keep or turn.conversation is not None) and svc.store.known_down():
        # Its answer could not be recorded: refused before the provider is paid (see Database.known_down).
        raise StoreUnavailable()
    targets = svc.router.targets(call.headers, call.caller)
    if foreign is not None:
        prompts.refused_everywhere(foreign, [target.provider for target in targets])
    trace = call.trace or Trace(trace_id="", method="POST", path="/v1/responses")
    ctx = Context(svc, call.caller, call.headers, trace)
    for before in svc.befores:
        if (early := before(ctx, turn, targets)) is not None:
            return early, targets[0]

    arounds = [around for wants, around in svc.arounds if wants(ctx, turn)]
    if foreign is None and not arounds:  # a plain request: the attempt stage, and nothing around it
        return attempt(svc, targets, lambda target: _create_on(ctx, turn, target), trace)

    def on(inner: Turn, target: Target) -> Reply:
        if foreign is not None:  # tried on each target: a fallback may reach one that keeps prompts
            prompts.check_target(foreign, target.provider)
        return _create_on(ctx, inner, target)

    def run(inner: Turn) -> tuple[Reply, Target]:
        return attempt(svc, targets, functools.partial(on, inner), trace)

    for around in reversed(arounds):  # the first listed is the outermost
        run = functools.partial(around, ctx, targets=targets, run=run, record=functools.partial(_record, ctx, turn))
    return run(turn)


def _record(ctx: Context, turn: Turn, target: Target) -> Callable[[dict], None]:
    """The finish of a response an ``around`` extension made of several calls: kept as the gateway's own
    (emulated) response, with this turn's input, as an adapter's would be.
    """
    plan = make_plan(ctx.svc, ctx.caller, turn, target)
    plan.native = False
    return finisher(ctx.svc, ctx.caller, turn, plan, ctx.trace)


def _create_on(ctx: Context, turn: Turn, target: Target) -> Reply:
    """One try of the create on one target: plan it, let the extensions change the plan or answer, send."""
    plan = make_plan(ctx.svc, ctx.caller, turn, target)
    finish = finisher(ctx.svc, ctx.caller, turn, plan, ctx.trace)
    for plan_hook in ctx.svc.plans:
        if (early := plan_hook(ctx, turn, plan, finish)) is not None:
            return early
    reply = send(ctx.svc, ctx.caller, ctx.headers, turn, plan, finish)
    if OMITTED_HEADER in reply.headers:  # tools a chat provider was not shown: logged and counted too
        ctx.trace.omitted_tools = reply.headers[OMITTED_HEADER]
    return reply

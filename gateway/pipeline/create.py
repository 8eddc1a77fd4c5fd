"""Create: resolve, the extensions' ``before``, route, attempt (per target: plan, the extensions' ``plan``,
send), finish (in ``send``'s adapter, through the sinks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..auth import Caller
from ..call import Context, Turn
from ..errors import InvalidRequest
from ..memory import ConnectionMemory
from ..observe import Trace
from ..reply import Reply
from ..routing import Target
from .attempt import attempt
from .finish import finisher
from .plan import make_plan, send
from .resolve import resolve_turn

if TYPE_CHECKING:
    from ..services import Services


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

    A long-lived connection (a WebSocket) passes its ``memory``: a context source asked before the store
    for the previous response and its conversation, and a sink given every finished response, also with
    ``store: false``. ``generate=False`` answers a response made of the request alone (the warm-up
    extension). A background consumer passes its ``run``: the sink of the final record, and the id the
    response is known by.
    """
    if body.get("background") and body.get("store") is False:
        raise InvalidRequest("Background responses must be stored: remove store: false, or background.", param="store")
    turn = resolve_turn(
        svc, caller, body, keep=body.get("store") is not False, memory=memory, generate=generate, run=run
    )
    targets = svc.router.targets(headers, caller)
    ctx = Context(svc, caller, headers, trace or Trace(trace_id="", method="POST", path="/v1/responses"))
    for extension in svc.extensions:
        if hasattr(extension, "before") and (early := extension.before(ctx, turn, targets)) is not None:
            return early, targets[0]
    return attempt(svc, targets, lambda target: _create_on(ctx, turn, target), ctx.trace)


def _create_on(ctx: Context, turn: Turn, target: Target) -> Reply:
    """One try of the create on one target: plan it, let the extensions change the plan or answer, send."""
    plan = make_plan(ctx.svc, ctx.caller, turn, target)
    finish = finisher(ctx.svc, ctx.caller, turn, plan, ctx.trace)
    for extension in ctx.svc.extensions:
        if hasattr(extension, "plan") and (early := extension.plan(ctx, turn, plan, finish)) is not None:
            return early
    return send(ctx.svc, ctx.caller, ctx.headers, turn, plan, finish)

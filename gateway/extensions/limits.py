"""Limits per key, before the provider is paid: the models allowed, requests and tokens per minute, USD per
day and month (gateway/limits.py). Around the attempt stage: the reply says the limits
(``x-ratelimit-*``, in place of the provider's) and the tokens reserved are settled from its ``usage``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .. import sse
from ..call import Context, Turn
from ..limits import Held, Limits
from ..reply import Reply
from ..routing import Target

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class KeyLimits:
    def __init__(self, limits: Limits):
        self.limits = limits

    def before(self, ctx: Context, turn: Turn, targets: list[Target]) -> Reply | None:
        # A background run was checked when it was queued; only a create is counted, once.
        if turn.keeper is None:
            ctx.held = self.limits.check(ctx.caller, turn.body)
        return None

    def wants(self, ctx: Context, turn: Turn) -> bool:
        return ctx.held is not None

    def around(
        self,
        ctx: Context,
        turn: Turn,
        targets: list[Target],
        run: Callable[[Turn], tuple[Reply, Target]],
        record: Callable,
    ) -> tuple[Reply, Target]:
        held = ctx.held
        try:
            reply, target = run(turn)
        except BaseException:
            self.limits.settle(held, {"status": "failed"})  # nothing was answered: the tokens are given back
            raise
        if held.headers:
            for name in [h for h in reply.headers if h.lower().startswith("x-ratelimit-")]:
                del reply.headers[name]  # the key's limits, not the provider's, are the caller's
            reply.headers.update(held.headers)
        if reply.stream is not None:
            reply.stream = self._settled(held, reply.stream)
        elif reply.status < 400:
            self.limits.settle(held, reply.data)
        else:
            self.limits.settle(held, {"status": "failed"})
        return reply, target

    def _settled(self, held: Held, stream: Iterator[sse.Event]) -> Iterator[sse.Event]:
        final: Any = {"status": "failed"}
        try:
            for event in stream:
                if event.event in _TERMINAL or event.event is None:
                    payload = event.json()
                    if payload is not None and payload.get("type") in _TERMINAL:
                        final = payload.get("response") or final
                yield event
        finally:
            self.limits.settle(held, final)

"""Warm-up (``generate: false``): the turn is answered with a response made of the request alone, kept as
any other, without calling the provider.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import warmup
from ..call import Context, Turn
from ..reply import Reply


class WarmUp:
    def plan(self, ctx: Context, turn: Turn, plan: Any, finish: Callable[[dict], None]) -> Reply | None:
        if turn.generate:
            return None
        return warmup.prepare(plan.body, turn.prev_id, finish)

"""Warm-up (``generate: false``): a response made of the request alone, without asking the provider for output.

It warms a conversation up (instructions, tools, first messages) and answers with a response id that
later turns continue from with ``previous_response_id``, as the API's WebSocket mode does. The gateway
makes it itself, for every provider, so it is recorded as an emulated response of the target's provider.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from ..call import Context, Turn
from ..emulation import response as build
from ..emulation.stream import StreamTranslator
from ..reply import Reply


class WarmUp:
    def plan(self, ctx: Context, turn: Turn, plan: Any, finish: Callable[[dict], None]) -> Reply | None:
        if turn.generate:
            return None
        return prepare(plan.body, turn.prev_id, finish)


def prepare(body: dict, previous_response_id: str | None, on_final: Callable[[dict], None]) -> Reply:
    """The completed, empty Response for ``body``: as events when it asks for a stream, else as JSON.

    ``on_final`` gets it first (the record is kept before the answer leaves).
    """
    skeleton = build.skeleton(body, build.new_id("resp"), int(time.time()), previous_response_id)
    translator = StreamTranslator(skeleton)
    opening = translator.start()
    translator.finish_reason = "stop"
    final, closing = translator.complete()
    on_final(final)
    if body.get("stream"):
        return Reply(200, {}, stream=iter(opening + closing), primed=True)
    return Reply(200, {}, orjson.dumps(final), data=final)

"""Background submission: a create with ``background: true`` is checked, recorded as queued and put on the
task queue; a consumer process runs it later through the same pipeline, with its run as the sink.
"""

from __future__ import annotations

from ..call import Context, Turn
from ..reply import Reply
from ..routing import Target, mark


class BackgroundSubmission:
    def before(self, ctx: Context, turn: Turn, targets: list[Target]) -> Reply | None:
        if not turn.body.get("background") or turn.keeper is not None:  # a kept run is the queued one
            return None
        body = turn.body
        if turn.unexpanded is not None:  # queued as the client sent it: the run expands its prompt template
            body = {k: v for k, v in turn.unexpanded.items() if k != "conversation"}
        if turn.conversation is not None:  # the run reads the conversation, and its turn joins it
            body = {**body, "conversation": turn.conversation}
        reply = ctx.svc.background.submit(
            caller=ctx.caller,
            headers=ctx.headers,
            body=body,
            provider=targets[0].provider.name,
            input_items=turn.input.items,
            previous_response_id=turn.prev_id,
            conversation=turn.conversation,
        )
        mark(reply.headers, targets[0], 0)
        return reply

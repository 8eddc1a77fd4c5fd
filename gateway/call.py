"""Values below every layer: the Turn one create carries to every target it tries."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .items import TurnInput
    from .memory import ConnectionMemory
    from .store import StoredResponse

# The mode of a response the gateway ran in the background: read from the store, whichever provider made it.
BACKGROUND = "background"


@dataclasses.dataclass(frozen=True)
class Turn:
    """What one create carries to every target it tries: the request and its context from the store."""

    body: dict  # the validated request, without ``conversation``
    prev_id: str | None
    prev: StoredResponse | None
    keep: bool  # record the response (``store`` is not false)
    input: TurnInput
    conversation: str | None = None
    history: list[dict] | None = None  # the conversation's items from its latest compaction on
    memory: ConnectionMemory | None = None  # a long-lived connection's memory of its responses
    generate: bool = True  # False: answer a response made of the request alone (warm-up)
    run: Any = None  # a background run (consumer.Run): its response id, and where its final record goes


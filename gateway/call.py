"""Values below every layer: a create's Context and the Turn it carries to every target it tries."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .auth import Caller
    from .items import TurnInput
    from .memory import ConnectionMemory
    from .observe import Trace
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



@dataclasses.dataclass(frozen=True)
class Context:
    """What the stages and the extensions of one create share: the components, the caller, the request."""

    svc: Any  # services.Services: the pipeline gets its components as a value, and never imports services.py
    caller: Caller
    headers: Mapping[str, str]
    trace: Trace

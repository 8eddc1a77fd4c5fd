"""Values below every layer: a create's Context and the Turn it carries to every target it tries."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .auth import Caller
    from .items import TurnInput
    from .observe import Trace
    from .routing import Target
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
    source: Any = None  # a context source asked before the store (see Call)
    sinks: tuple = ()  # given every finished response, kept or not (see Call)
    generate: bool = True  # False: answer a response made of the request alone (warm-up)
    keeper: Any = None  # keeps the final record in place of the store (see Call)
    # False: a call inside a response an ``around`` extension makes of several (a tool loop's model calls);
    # that response is charged once, with their usage summed, not each call on its own.
    charge: bool = True
    # The request's ``prompt`` when the gateway expanded its template into ``body`` (gateway/prompts.py): echoed
    # on the response, never sent on; and the request as it came, which a background run is queued with.
    prompt: dict | None = None
    unexpanded: dict | None = None


@dataclasses.dataclass(slots=True)
class Call:
    """What a door hands the pipeline: who calls, what they sent, and what only that door has.

    - ``source``: asked before the store for the previous response (``get(id)``), the conversation up to
      it (``context(id)``) and whether only it holds that response (``unstored(id)``): a WebSocket
      connection's memory.
    - ``sinks``: each ``take(response, finished)`` every finished response, after the store, kept or not:
      the same memory.
    - ``keeper``: keeps the final record in place of the store (``take``), and names the response
      (``response_id``); it reads the provider's stream whatever the client asked, storing events as they
      come: a background run.
    """

    caller: Caller
    headers: Mapping[str, str]
    body: dict
    trace: Trace | None = None
    source: Any = None
    sinks: tuple = ()
    keeper: Any = None
    generate: bool = True  # False: answer a response made of the request alone (warm-up)


@dataclasses.dataclass(slots=True)
class Context:
    """What the stages and the extensions of one create share: the components, the caller, the request."""

    svc: Any  # services.Services: the pipeline gets its components as a value, and never imports services.py
    caller: Caller
    headers: Mapping[str, str]
    trace: Trace
    held: Any = None  # what the key's limits decided for this create (extensions/limits.py), for its reply


@dataclasses.dataclass(slots=True)
class Outgoing:
    """What an adapter (native pass-through, or emulation over Chat Completions) sends one target for a turn.

    Both adapters take this and a ``finish`` for the final response, and return the same thing: a Reply
    holding a JSON response, or events as values (``sse.Event``).
    """

    target: Target
    body: dict  # the Responses request as this target gets it (native: the history inlined where it must be)
    history: list[dict]  # the conversation before the turn, as sent (emulation sends it as messages)
    new_items: list[dict]  # the turn's items, as sent
    previous_response_id: str | None  # the one the client gave
    response_id: str | None  # the id the answer must carry (a background run's); None: the adapter's own
    client_headers: Mapping[str, str]  # the client's request headers, for those that pass through
    amend: Callable[[dict], None] | None = None  # the gateway's fields, on every response the client sees

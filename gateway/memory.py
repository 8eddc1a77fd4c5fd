"""A connection's memory of its last responses: what makes ``previous_response_id`` work on a long-lived
connection (a WebSocket) even with ``store: false``, without asking the store.

Transport-neutral: the relay asks it before the store and hands it every finished response; the transport
that owns the connection makes one, and drops it with the connection.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any

import orjson

from .items import resendable_input
from .store import StoredResponse

# The API's own connection-local cache keeps the latest response; a few more cost little and let a client
# branch from a recent turn.
DEFAULT_RESPONSES = 16


@dataclasses.dataclass(frozen=True)
class _Held:
    record: StoredResponse
    context: list[dict] | None  # the whole conversation up to and including this response; None: in the store
    size: int  # bytes of context this entry keeps alive (approximate: its items as JSON)
    kept: bool  # recorded in the store (and, for a native provider, kept by the provider too)


class ConnectionMemory:
    """The last responses of one caller's connection, bounded in count and in bytes.

    The byte bound is ``max_bytes`` of conversation (by default ``max_body_bytes``: no more than one HTTP
    request could carry inline). A response whose conversation is larger is not held; a continuation from it
    then needs the store, and without the store it is ``previous_response_not_found``, as the API answers
    for a response its connection no longer holds. Failed responses are never held.
    """

    def __init__(self, tenant: str, *, max_bytes: int, max_responses: int = DEFAULT_RESPONSES):
        self.tenant = tenant
        self.max_bytes = max_bytes
        self.max_responses = max_responses
        self._held: collections.OrderedDict[str, _Held] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def get(self, response_id: str) -> StoredResponse | None:
        held = self._held.get(response_id)
        return held.record if held is not None else None

    def context(self, response_id: str) -> list[dict] | None:
        """The conversation up to and including ``response_id`` (input items without the ids and statuses the
        gateway minted, output items as made), as ``Store.chain_items`` gives it; None when only the store
        has it.
        """
        held = self._held.get(response_id)
        return list(held.context) if held is not None and held.context is not None else None

    def unstored(self, response_id: str) -> bool:
        """True when only this memory holds the response: neither the store nor the provider kept it."""
        held = self._held.get(response_id)
        return held is not None and not held.kept

    def take(self, response: dict, done: Any) -> None:
        """The pipeline's sink: hold every finished response of the connection (``pipeline.finish.Finished``)."""
        self.remember(
            response,
            provider=done.provider,
            mode=done.mode,
            input_items=done.input_items,
            history=done.before,
            kept=done.keep,
        )

    def remember(
        self,
        response: dict,
        *,
        provider: str,
        mode: str,
        input_items: list[dict],
        history: list[dict] | None,
        kept: bool,
    ) -> None:
        """Hold a finished ``response``; ``history`` is the conversation before it (None: only the store
        knows it, which is then the case for the response too). A failed response is forgotten instead.
        """
        response_id = response.get("id")
        if not isinstance(response_id, str):
            return
        if response.get("status") == "failed":
            self.forget(response_id)
            return
        context = None
        size = 0
        if history is not None:
            own = [resendable_input(item) for item in input_items]
            own += [item for item in response.get("output") or [] if isinstance(item, dict)]
            context = history + own
            size = len(orjson.dumps(context))
            if size > self.max_bytes:
                self.forget(response_id)
                return
        elif not kept:
            return  # nothing to continue from: the conversation is neither here nor in the store
        created = response.get("created_at")
        record = StoredResponse(
            id=response_id,
            tenant=self.tenant,
            provider=provider,
            mode=mode,
            previous_response_id=response.get("previous_response_id"),
            created_at=float(created) if isinstance(created, int | float) else time.time(),
            body=response,
        )
        self._held.pop(response_id, None)
        self._held[response_id] = _Held(record, context, size, kept)
        self._evict()

    def forget(self, response_id: str) -> None:
        self._held.pop(response_id, None)

    def _evict(self) -> None:
        # Entries share their item dicts, so the sum over-counts: the bound is conservative.
        total = sum(held.size for held in self._held.values())
        while self._held and (len(self._held) > self.max_responses or total > self.max_bytes):
            _, oldest = self._held.popitem(last=False)
            total -= oldest.size

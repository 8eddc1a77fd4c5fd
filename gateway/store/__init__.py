"""The response store: every response the gateway relayed, with its owner, provider and items, over the
bounded engine of engine.py; conversations, background runs, prompt templates and usage are sub-stores on the
same engine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .. import greenlets
from ..errors import UpstreamError
from ..items import REFERENCE, FoundItem, input_items_of, mint_item_id
from .background import ACTIVE, BackgroundStore, delete_runs
from .console import ConsoleStore
from .conversations import ConversationStore, StoredConversation, append_in, resendable
from .engine import Database, Observe, make_engine
from .group import GroupCommit
from .limits import LimitStore
from .prompts import PromptStore, StoredPrompt
from .tables import INPUT, OUTPUT, items, page, responses, runs
from .usage import UsageStore

# Names other modules and the tests reach through the package.
__all__ = [
    "REFERENCE",
    "ConversationStore",
    "Database",
    "FoundItem",
    "StoredConversation",
    "StoredPrompt",
    "input_items_of",
    "make_engine",
    "mint_item_id",
]

MAX_CHAIN = 10_000

# Hot-path statements are built once: building one per call (``.values(...)``, fresh ``where``) costs more
# in SQLAlchemy's coercion and cache-key work than SQLite spends executing it.
_INSERT_RESPONSE = responses.insert()
_INSERT_ITEMS = items.insert()
_GET = sa.select(responses).where(responses.c.id == sa.bindparam("id"), responses.c.tenant == sa.bindparam("tenant"))
_OWNER = sa.select(responses.c.tenant).where(responses.c.id == sa.bindparam("id"))


# items_by_id: one row per id, the tenant's own first, then its output row. Ranking keys only in the
# subquery and joining back for the body keeps the database from carrying every copy's body through the window.
_IDS_PER_QUERY = 1000  # well under SQLite's and PostgreSQL's limits on bound parameters
_ranked = (
    sa.select(
        items.c.response_id,
        items.c.kind,
        items.c.position,
        responses.c.tenant,
        responses.c.provider,
        sa.func.row_number()
        .over(
            partition_by=items.c.item_id,
            order_by=(
                sa.case((responses.c.tenant == sa.bindparam("tenant"), 0), else_=1),
                items.c.kind.desc(),
                items.c.response_id,
                items.c.position,
            ),
        )
        .label("rank"),
    )
    .join(responses, responses.c.id == items.c.response_id)
    .where(items.c.item_id.in_(sa.bindparam("ids", expanding=True)))
    .subquery("ranked")
)
_ITEMS_BY_ID = (
    sa.select(items.c.item_id, items.c.kind, items.c.body, _ranked.c.tenant, _ranked.c.provider)
    .join(
        _ranked,
        sa.and_(
            items.c.response_id == _ranked.c.response_id,
            items.c.kind == _ranked.c.kind,
            items.c.position == _ranked.c.position,
        ),
    )
    .where(_ranked.c.rank == 1)
)


def _resendable(kind: int, body: str) -> dict:
    """A stored item, from its JSON, as it can be sent to a provider again (see ``resendable``)."""
    return resendable(kind, orjson.loads(body))


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    id: str
    tenant: str
    provider: str
    mode: str
    previous_response_id: str | None
    created_at: float
    body: dict


class Store(Database):
    """Every response the gateway relayed, with its owner, provider and items; and the sub-stores."""

    INSERT_RESPONSE = _INSERT_RESPONSE
    INSERT_ITEMS = _INSERT_ITEMS

    def __init__(
        self,
        url: str,
        *,
        write_timeout: float = 5.0,
        observe: Observe | None = None,
        usage_lost: Callable[[int], None] | None = None,
    ):
        super().__init__(url, write_timeout=write_timeout, observe=observe)
        self.conversations = ConversationStore(self)
        self.background = BackgroundStore(self)
        self.prompts = PromptStore(self)
        self.limits = LimitStore(self)
        self.console = ConsoleStore(self)
        # ``usage_lost(n)``: n usage rows could not be kept (the metrics hook).
        self.usage = UsageStore(self, lost=usage_lost)
        # Under gevent, records made in one turn of the worker's event loop share a transaction (group.py).
        self._group = GroupCommit(self) if greenlets.active() else None

    # ------------------------------------------------------------------ writes
    def record(
        self,
        *,
        tenant: str,
        provider: str,
        mode: str,
        response: dict,
        input_items: list[dict],
        conversation: str | None = None,
        cost: Decimal | None = None,
    ) -> None:
        """Keep a response and its items (input then output) in one transaction; with ``conversation``,
        append the same items to that conversation in the same transaction (nothing, if it is gone).
        ``cost``: what it cost in USD, None when unknown.
        """
        try:
            row, rows, turn = self.rows_of(tenant, provider, mode, response, input_items, cost)
        except orjson.JSONEncodeError:
            # Requests are held to a depth the store can write; only a provider's answer can exceed it.
            raise UpstreamError(
                f"The provider '{provider}' answered with JSON nested too deeply to store.",
                code="upstream_invalid_response",
            ) from None

        def alone() -> None:
            self.write("record", write)

        def write() -> None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(_INSERT_RESPONSE, row)
                    if rows:
                        conn.execute(_INSERT_ITEMS, rows)
                    if conversation is not None:
                        append_in(conn, tenant, conversation, [(INPUT, i) for i in input_items] + turn, row["id"])
            except IntegrityError:
                # A retry after a commit whose acknowledgement was lost finds its own row: that is success.
                with self.engine.connect() as conn:
                    if conn.execute(_OWNER, {"id": row["id"]}).scalar() != tenant:
                        raise UpstreamError(
                            f"The provider '{provider}' answered with a response id the gateway already holds.",
                            code="upstream_duplicate_id",
                        ) from None

        if conversation is None and self._group is not None:
            self._group.write(row, rows, alone)
        else:
            alone()

    def rows_of(
        self,
        tenant: str,
        provider: str,
        mode: str,
        response: dict,
        input_items: list[dict],
        cost: Decimal | None = None,
    ) -> tuple[dict, list[dict], list[tuple[int, dict]]]:
        """A response's row, its item rows (input then output), and its items as a conversation turn."""
        output = [item for item in response.get("output") or [] if isinstance(item, dict)]
        turn: list[tuple[int, dict]] = []
        rows = [
            {
                "response_id": response["id"],
                "kind": INPUT,
                "position": i,
                "item_id": item["id"],
                "body": orjson.dumps(item).decode(),
            }
            for i, item in enumerate(input_items)
        ]
        for i, item in enumerate(output):
            item_id = item.get("id") if isinstance(item.get("id"), str) else mint_item_id(item)
            turn.append((OUTPUT, {**item, "id": item_id}))
            rows.append(
                {
                    "response_id": response["id"],
                    "kind": OUTPUT,
                    "position": i,
                    "item_id": item_id,
                    "body": orjson.dumps(item).decode(),
                }
            )
        created = response.get("created_at")
        row = {
            "id": response["id"],
            "tenant": tenant,
            "provider": provider,
            "mode": mode,
            "model": str(response.get("model") or "")[:256],
            "status": str(response.get("status") or "")[:32],
            "previous_response_id": response.get("previous_response_id"),
            "created_at": float(created) if isinstance(created, int | float) else time.time(),
            "body": orjson.dumps(response).decode(),
            "cost_usd": cost,
        }
        return row, rows, turn

    def delete(self, tenant: str, response_id: str) -> bool:
        """Remove a response and its items; False when this tenant has no such response."""

        def write() -> int:
            with self.engine.begin() as conn:
                deleted = conn.execute(
                    responses.delete().where(responses.c.id == response_id, responses.c.tenant == tenant)
                ).rowcount
                if deleted:
                    conn.execute(items.delete().where(items.c.response_id == response_id))
                    delete_runs(conn, [response_id])
            return deleted

        return bool(self.write("delete", write))

    def purge(self, older_than: float, *, batch: int = 1000, progress: Callable[[int], None] | None = None) -> int:
        """Delete responses created more than ``older_than`` seconds ago, in batches; returns how many.

        Conversations idle for as long (no item added, no metadata changed) go too, with their items.
        """
        cutoff = time.time() - older_than
        while self.conversations.purge(cutoff, batch):
            pass

        def delete(conn: sa.Connection, ids: list) -> None:
            conn.execute(items.delete().where(items.c.response_id.in_(ids)))
            delete_runs(conn, ids)
            conn.execute(responses.delete().where(responses.c.id.in_(ids)))

        # A background response still queued or running is its consumer's: it goes once it has ended.
        running = sa.select(runs.c.response_id).where(runs.c.status.in_(ACTIVE))
        old = (
            sa.select(responses.c.id)
            .where(responses.c.created_at < cutoff, responses.c.id.not_in(running))
            .limit(batch)
        )
        total = 0
        while done := self.purge_batch("purge", old, delete):
            total += done
            if progress is not None:
                progress(total)
        return total

    # ------------------------------------------------------------------ reads
    def owner_of(self, response_id: str) -> str | None:
        """The tenant of a response, or None when the store has never seen it (or it was deleted)."""

        def read() -> str | None:
            with self.engine.connect() as conn:
                return conn.execute(_OWNER, {"id": response_id}).scalar()

        return self.read("owner_of", read)

    def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        def read() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(_GET, {"id": response_id, "tenant": tenant}).first()

        row = self.read("get", read)
        if row is None:
            return None
        return StoredResponse(
            id=row.id,
            tenant=row.tenant,
            provider=row.provider,
            mode=row.mode,
            previous_response_id=row.previous_response_id,
            created_at=row.created_at,
            body=orjson.loads(row.body),
        )

    def input_items(
        self, tenant: str, response_id: str, *, limit: int = 20, order: str = "desc", after: str | None = None
    ) -> tuple[list[dict], bool] | None:
        """One page of a response's input items and whether more follow; None when not this tenant's."""

        def read() -> list | None:
            with self.engine.connect() as conn:
                owned = conn.execute(
                    sa.select(responses.c.id).where(responses.c.id == response_id, responses.c.tenant == tenant)
                ).first()
                if owned is None:
                    return None
                where = [items.c.response_id == response_id, items.c.kind == INPUT]
                return page(conn, items, where, after=after, order=order, limit=limit)

        rows = self.read("input_items", read)
        return None if rows is None else (rows[:limit], len(rows) > limit)

    def chain_items(self, tenant: str, response_id: str) -> list[dict]:
        """The whole conversation up to and including ``response_id``: every turn's input then output items,
        oldest turn first. One recursive query; a deleted turn ends the walk there.

        Input items lose the ids and statuses the gateway minted for them, so that they can be sent to a
        provider again as plain input; output items keep theirs, as the API expects of echoed output.
        """
        chain = (
            sa.select(
                responses.c.id.label("id"),
                responses.c.previous_response_id.label("prev"),
                sa.literal_column("0").label("depth"),
            )
            .where(responses.c.id == response_id, responses.c.tenant == tenant)
            .cte("chain", recursive=True)
        )
        step = sa.select(responses.c.id, responses.c.previous_response_id, (chain.c.depth + 1)).where(
            responses.c.id == chain.c.prev, responses.c.tenant == tenant, chain.c.depth < MAX_CHAIN
        )
        chain = chain.union_all(step)
        if self.engine.dialect.name == "postgresql":
            # PostgreSQL cannot estimate a recursive CTE's size and, on a large items table, hash-joins
            # it with a full scan (343 ms for 1,000 turns among 1M responses). LATERAL makes it one index
            # lookup per turn, so the cost follows the chain, not the table. SQLite has no LATERAL and
            # already plans index searches here.
            turn = (
                sa.select(items.c.kind, items.c.position, items.c.body)
                .where(items.c.response_id == chain.c.id)
                # OFFSET 0 keeps the planner from flattening the subquery back into that same join.
                .offset(0)
                .lateral("turn")
            )
            query = (
                sa.select(turn.c.kind, turn.c.body)
                .select_from(chain.join(turn, sa.true()))
                .order_by(chain.c.depth.desc(), turn.c.kind, turn.c.position)
            )
        else:
            query = (
                sa.select(items.c.kind, items.c.body)
                .join(chain, items.c.response_id == chain.c.id)
                .order_by(chain.c.depth.desc(), items.c.kind, items.c.position)
            )

        def read() -> list:
            with self.engine.connect() as conn:
                return conn.execute(query).all()

        return [_resendable(row.kind, row.body) for row in self.read("chain_items", read)]

    def items_by_id(self, tenant: str, item_ids: Collection[str]) -> dict[str, FoundItem | None]:
        """The tenant's stored items with these ids, by id, from the input or output of any of its responses.

        What an ``item_reference`` names. An id only other tenants hold maps to None (their items are never
        returned); an id never stored is absent. An item stored several times (echoed or referred to again in
        later turns) is answered from its output row, the item as the model made it, when there is one.
        Items come in ``chain_items``' form, ready to send again: input items without the ids and statuses
        the gateway minted. One indexed query per ``_IDS_PER_QUERY`` distinct ids.
        """
        wanted = sorted(set(item_ids))

        def read() -> list:
            with self.engine.connect() as conn:
                return [
                    row
                    for start in range(0, len(wanted), _IDS_PER_QUERY)
                    for row in conn.execute(
                        _ITEMS_BY_ID, {"tenant": tenant, "ids": wanted[start : start + _IDS_PER_QUERY]}
                    )
                ]

        rows = self.read("items_by_id", read) if wanted else []
        return {
            row.item_id: FoundItem(_resendable(row.kind, row.body), row.provider if row.kind == OUTPUT else None)
            if row.tenant == tenant
            else None
            for row in rows
        }

    def dispose(self) -> None:
        """Write the usage rows still pending (one attempt), then close the engine's connections."""
        self.usage.close()
        super().dispose()

    def count(self) -> int:
        def read() -> int:
            with self.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(responses)).scalar_one()

        return self.read("count", read)

"""Conversations in the store: the conversation rows, their items in order, and appending a turn's items.

Every query names the tenant: another tenant's conversation reads exactly like a missing one. Positions are
allocated by the append itself, in its transaction (see ``append_in``), so concurrent turns on one
conversation, from any worker or host, keep every item, each turn's items together.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from ..items import resendable_input
from .tables import INPUT, OUTPUT, conversation_items, conversations, page

if TYPE_CHECKING:
    from . import Store


_GET = sa.select(conversations).where(
    conversations.c.id == sa.bindparam("id"), conversations.c.tenant == sa.bindparam("tenant")
)
_INSERT_ITEMS = conversation_items.insert()
# The block of positions for an append: the row lock this UPDATE takes (PostgreSQL) or the database's write
# lock (SQLite) makes concurrent appends to one conversation take their turns.
_RESERVE = (
    conversations.update()
    .where(conversations.c.id == sa.bindparam("cid"), conversations.c.tenant == sa.bindparam("ctenant"))
    .values(
        next_position=conversations.c.next_position + sa.bindparam("n", type_=sa.Integer),
        updated_at=sa.bindparam("now", type_=sa.Float),
    )
)
_NEXT = sa.select(conversations.c.next_position).where(conversations.c.id == sa.bindparam("cid"))
_CONTEXT = (
    sa.select(conversation_items.c.kind, conversation_items.c.body)
    .where(conversation_items.c.conversation_id == sa.bindparam("cid"))
    .order_by(conversation_items.c.position)
)


@dataclasses.dataclass(frozen=True)
class StoredConversation:
    id: str
    tenant: str
    created_at: float
    metadata: dict

    def as_object(self) -> dict:
        """The Conversation object of the API."""
        return {"id": self.id, "object": "conversation", "created_at": int(self.created_at), "metadata": self.metadata}


def resendable(kind: int, item: dict) -> dict:
    """A stored item as it can be sent to a provider again: input items lose the ids and statuses the
    gateway minted for them; output items keep theirs, as the API expects of echoed output.
    """
    return resendable_input(item) if kind == INPUT else item


def new_conversation_id() -> str:
    return f"conv_{uuid.uuid4().hex}"


def _conversation(row: Any) -> StoredConversation:
    return StoredConversation(row.id, row.tenant, row.created_at, orjson.loads(row.meta))


def _rows(conversation_id: str, start: int, items: list[tuple[int, dict]], response_id: str | None) -> list[dict]:
    return [
        {
            "conversation_id": conversation_id,
            "position": start + i,
            "kind": kind,
            "item_id": item["id"],
            "response_id": response_id,
            "body": orjson.dumps(item).decode(),
        }
        for i, (kind, item) in enumerate(items)
    ]


def append_in(
    conn: sa.Connection,
    tenant: str,
    conversation_id: str,
    items: list[tuple[int, dict]],
    response_id: str | None = None,
) -> bool:
    """Append ``(kind, item)`` pairs (items with ids) at the end of a conversation, inside ``conn``'s
    transaction; False when the tenant has no such conversation (deleted meanwhile, say).

    The positions are taken from the conversation row that this transaction has just updated, so they are
    the ones no other transaction can take: its commit makes them one contiguous block.
    """
    reserved = conn.execute(
        _RESERVE, {"cid": conversation_id, "ctenant": tenant, "n": len(items), "now": time.time()}
    ).rowcount
    if not reserved:
        return False
    if items:
        end = conn.execute(_NEXT, {"cid": conversation_id}).scalar_one()
        conn.execute(_INSERT_ITEMS, _rows(conversation_id, end - len(items), items, response_id))
    return True


class ConversationStore:
    """The conversation queries of a Store (``store.conversations``), with the store's bounded waits."""

    def __init__(self, store: Store):
        self._store = store

    # ------------------------------------------------------------------ conversations
    def create(self, tenant: str, metadata: dict, items: list[dict]) -> StoredConversation:
        """A new conversation with its first items (each with an id), in one transaction."""
        now = time.time()
        conv = StoredConversation(new_conversation_id(), tenant, now, metadata)
        row = {
            "id": conv.id,
            "tenant": tenant,
            "created_at": now,
            "updated_at": now,
            "next_position": len(items),
            "meta": orjson.dumps(metadata).decode(),
        }

        def write(conn: sa.Connection) -> None:
            # A retry after a lost acknowledgement finds its own row: the conversation exists, as asked.
            if conn.execute(_GET, {"id": conv.id, "tenant": tenant}).first() is not None:
                return
            conn.execute(conversations.insert(), row)
            if items:
                conn.execute(_INSERT_ITEMS, _rows(conv.id, 0, [(INPUT, item) for item in items], None))

        self._store.write_in("conversation_create", write)
        return conv

    def get(self, tenant: str, conversation_id: str) -> StoredConversation | None:
        row = self._store.read_in(
            "conversation_get", lambda conn: conn.execute(_GET, {"id": conversation_id, "tenant": tenant}).first()
        )
        return None if row is None else _conversation(row)

    def update(self, tenant: str, conversation_id: str, metadata: dict) -> StoredConversation | None:
        """Replace the metadata; None when the tenant has no such conversation."""

        def write(conn: sa.Connection) -> Any:
            conn.execute(
                conversations.update()
                .where(conversations.c.id == conversation_id, conversations.c.tenant == tenant)
                .values(meta=orjson.dumps(metadata).decode(), updated_at=time.time())
            )
            return conn.execute(_GET, {"id": conversation_id, "tenant": tenant}).first()

        row = self._store.write_in("conversation_update", write)
        return None if row is None else _conversation(row)

    def delete(self, tenant: str, conversation_id: str) -> bool:
        """Remove a conversation and its items; False when the tenant has no such conversation."""

        def write(conn: sa.Connection) -> bool:
            deleted = conn.execute(
                conversations.delete().where(conversations.c.id == conversation_id, conversations.c.tenant == tenant)
            ).rowcount
            if deleted:
                conn.execute(conversation_items.delete().where(conversation_items.c.conversation_id == conversation_id))
            return bool(deleted)

        return self._store.write_in("conversation_delete", write)

    # ------------------------------------------------------------------ items
    def add_items(self, tenant: str, conversation_id: str, items: list[dict]) -> bool:
        """Append items (each with an id) as input items; False when the tenant has no such conversation."""
        return self._store.write_in(
            "conversation_add_items", lambda conn: append_in(conn, tenant, conversation_id, [(INPUT, i) for i in items])
        )

    def append_turn(
        self, tenant: str, conversation_id: str, response_id: str, input_items: list[dict], output_items: list[dict]
    ) -> bool:
        """Append a turn made without a response record (``store: false``); False when the conversation is gone.

        Retried writes check first whether the block is already there: a commit whose acknowledgement was
        lost must not append the turn twice.
        """
        pairs = [(INPUT, i) for i in input_items] + [(OUTPUT, o) for o in output_items]
        tries = 0

        def write(conn: sa.Connection) -> bool:
            nonlocal tries
            tries += 1
            if (
                tries > 1
                and conn.execute(
                    sa.select(conversation_items.c.position)
                    .where(
                        conversation_items.c.conversation_id == conversation_id,
                        conversation_items.c.response_id == response_id,
                    )
                    .limit(1)
                ).first()
            ):
                return True
            return append_in(conn, tenant, conversation_id, pairs, response_id)

        return self._store.write_in("conversation_append", write)

    def context(self, tenant: str, conversation_id: str) -> list[dict] | None:
        """Every item of the conversation, oldest first, ready to send to a provider again (as
        ``Store.chain_items`` gives them); None when not this tenant's.
        """

        def read(conn: sa.Connection) -> list | None:
            if conn.execute(_GET, {"id": conversation_id, "tenant": tenant}).first() is None:
                return None
            return conn.execute(_CONTEXT, {"cid": conversation_id}).all()

        rows = self._store.read_in("conversation_context", read)
        return None if rows is None else [resendable(row.kind, orjson.loads(row.body)) for row in rows]

    def list_items(
        self, tenant: str, conversation_id: str, *, limit: int = 20, order: str = "desc", after: str | None = None
    ) -> tuple[list[dict], bool] | None:
        """One page of items and whether more follow; None when the tenant has no such conversation.

        Two index lookups and one range scan of ``limit + 1`` rows, however long the conversation.
        """

        def read(conn: sa.Connection) -> list | None:
            if conn.execute(_GET, {"id": conversation_id, "tenant": tenant}).first() is None:
                return None
            where = [conversation_items.c.conversation_id == conversation_id]
            return page(conn, conversation_items, where, after=after, order=order, limit=limit)

        rows = self._store.read_in("conversation_items", read)
        return None if rows is None else (rows[:limit], len(rows) > limit)

    def get_item(self, tenant: str, conversation_id: str, item_id: str) -> tuple[bool, dict | None]:
        """(whether the tenant has the conversation, the item or None)."""

        def read(conn: sa.Connection) -> tuple[bool, Any]:
            if conn.execute(_GET, {"id": conversation_id, "tenant": tenant}).first() is None:
                return False, None
            row = conn.execute(
                sa.select(conversation_items.c.body)
                .where(conversation_items.c.conversation_id == conversation_id, conversation_items.c.item_id == item_id)
                .order_by(conversation_items.c.position)
                .limit(1)
            ).first()
            return True, row

        found, row = self._store.read_in("conversation_item", read)
        return found, None if row is None else orjson.loads(row.body)

    def delete_item(self, tenant: str, conversation_id: str, item_id: str) -> tuple[StoredConversation | None, bool]:
        """(the conversation or None when not this tenant's, whether an item was deleted)."""

        def write(conn: sa.Connection) -> tuple[Any, int]:
            row = conn.execute(_GET, {"id": conversation_id, "tenant": tenant}).first()
            if row is None:
                return None, 0
            deleted = conn.execute(
                conversation_items.delete().where(
                    conversation_items.c.conversation_id == conversation_id, conversation_items.c.item_id == item_id
                )
            ).rowcount
            return row, deleted

        row, deleted = self._store.write_in("conversation_delete_item", write)
        return (None if row is None else _conversation(row)), bool(deleted)

    # ------------------------------------------------------------------ retention
    def purge(self, cutoff: float, batch: int = 1000) -> int:
        """Delete up to ``batch`` conversations idle since before ``cutoff`` (a timestamp), with their items."""

        def delete(conn: sa.Connection, ids: list) -> None:
            conn.execute(conversation_items.delete().where(conversation_items.c.conversation_id.in_(ids)))
            conn.execute(conversations.delete().where(conversations.c.id.in_(ids)))

        idle = sa.select(conversations.c.id).where(conversations.c.updated_at < cutoff).limit(batch)
        return self._store.purge_batch("purge_conversations", idle, delete)

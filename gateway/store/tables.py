"""The store's schema: responses, their items in order, conversations, background runs, prompt templates, the
usage of every charged call, and a small key-value table for the store's own state."""

from __future__ import annotations

import orjson
import sqlalchemy as sa
from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, Numeric, SmallInteger, String, Table, Text

SCHEMA_VERSION = 1
INPUT, OUTPUT = 0, 1  # items.kind: a response's input items come before its output items

metadata = MetaData()

responses = Table(
    "gw_responses",
    metadata,
    Column("id", String(128), primary_key=True),
    # The owner: every read filters on it, so another tenant's id looks exactly like a missing one.
    Column("tenant", String(64), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("mode", String(16), nullable=False),  # "native" | "emulated"
    Column("model", String(256)),
    Column("status", String(32)),
    # No foreign key: deleting a turn must leave the turns built on it readable.
    Column("previous_response_id", String(128)),
    Column("created_at", Float, nullable=False),
    Column("body", Text, nullable=False),  # the Response object as JSON
    # What the response cost in USD (gateway/spend.py); None: its model has no known price. Added after the
    # table's first version: Database.migrate adds it to a table made before (ADDED_COLUMNS).
    Column("cost_usd", Numeric(24, 12)),
)
Index("gw_responses_created_at", responses.c.created_at)

items = Table(
    "gw_items",
    metadata,
    Column("response_id", String(128), primary_key=True),
    Column("kind", SmallInteger, primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("item_id", String(128), nullable=False),
    Column("body", Text, nullable=False),
)
# The primary key (response_id, kind, position) serves paging. This index finds items by id: an `after`
# cursor (item_id and response_id), and the items an item_reference names (item_id alone, the owner checked
# through gw_responses' primary key). One index for both keeps the cost of every write as it was.
Index("gw_items_by_item_id", items.c.item_id, items.c.response_id)
# Columns added to a table after it was first made: create_all leaves an existing table as it is, so migrate
# adds each one that is missing. Nullable and without a default, so that adding one is a change of the
# catalogue alone (SQLite and PostgreSQL rewrite no rows), and gateways of the version before, which do not
# name it, go on reading and writing the table: the schema version stays.
ADDED_COLUMNS = ((responses, "cost_usd"),)
# Indexes of earlier versions, dropped by Store.migrate: gw_items_item_id (response_id, item_id) served
# only the cursor, which the index above serves as well.
OBSOLETE_INDEXES = ("gw_items_item_id",)

meta = Table(
    "gw_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# Conversations (the Conversations API), the gateway's own for every provider. A conversation belongs to
# one tenant; its items are kept in order by ``position``, which each append allocates from
# ``next_position`` inside its own transaction: two turns that finish at once each get one contiguous block,
# in the order their transactions commit, never interleaved.
conversations = Table(
    "gw_conversations",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    # Last activity (created, items added, metadata changed): retention counts from here, not from creation.
    Column("updated_at", Float, nullable=False),
    Column("next_position", Integer, nullable=False),
    Column("meta", Text, nullable=False),  # the metadata object as JSON
)
Index("gw_conversations_updated_at", conversations.c.updated_at)

conversation_items = Table(
    "gw_conversation_items",
    metadata,
    Column("conversation_id", String(128), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("kind", SmallInteger, nullable=False),  # INPUT | OUTPUT: how the item is sent to a provider again
    Column("item_id", String(128), nullable=False),
    Column("response_id", String(128)),  # the turn that appended it; None for items added directly
    Column("body", Text, nullable=False),
)
# The primary key (conversation_id, position) serves paging and the context of a turn; this index finds one
# item (retrieve, delete, an `after` cursor) within its conversation.
Index("gw_conversation_items_by_item_id", conversation_items.c.conversation_id, conversation_items.c.item_id)

# Background runs (``background: true``). A run belongs to the response of the same id (mode "background",
# in gw_responses). ``status`` is the response's while the run is live and its final status after; the
# consumer running it holds a lease (``owner``, ``lease_until``) that it renews, and a run whose lease ran
# out is ended ``failed`` by whoever notices first. ``last_seq`` is the number of its newest stored event.
runs = Table(
    "gw_runs",
    metadata,
    Column("response_id", String(128), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("status", String(16), nullable=False),  # queued | in_progress | completed | incomplete | failed | cancelled
    Column("job", Text),  # what the consumer needs to run it (credentials sealed); None once the run has ended
    Column("owner", String(128)),  # the consumer running it
    Column("lease_until", Float),
    Column("last_seq", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float),
)
# A tenant's live runs are counted on every background create (the per-tenant limit).
Index("gw_runs_tenant_status", runs.c.tenant, runs.c.status)
# Expired leases are looked for among live runs; event retention counts from a run's end.
Index("gw_runs_status_lease", runs.c.status, runs.c.lease_until)
Index("gw_runs_ended_at", runs.c.ended_at)
# The console's list of the latest runs.
Index("gw_runs_created_at", runs.c.created_at)

# Every event of a background run, numbered as the client sees it: replayed from any number on any host.
events = Table(
    "gw_events",
    metadata,
    Column("response_id", String(128), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(64), nullable=False),
    Column("body", Text, nullable=False),  # the event's JSON payload
)

# Prompt templates (``gateway/prompts.py``), the operator's, shared by every tenant: one row per version,
# numbered from 1. A prompt lives until it is deleted (all its versions at once); ``gateway purge`` leaves
# it alone. The primary key serves every query: a version, the latest one (the highest), the list by id.
prompts = Table(
    "gw_prompts",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("body", Text, nullable=False),  # {"instructions", "input", "variables"} as JSON
)


# What each charged call used and cost: one row per call to a provider the gateway made (a response, stored
# or not, failed ones included; a compaction summary; a token count), written off the request path in batches
# (store/usage.py). Kept ``usage_retention`` (400 days), purged by ``gateway purge`` on that age alone.
usage = Table(
    "gw_usage",
    metadata,
    # BigInteger on PostgreSQL; SQLite's INTEGER PRIMARY KEY (its rowid) is 64 bits already.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),  # Unix time
    Column("day", String(10), nullable=False),  # the UTC date of ``at``, YYYY-MM-DD: the report groups by it
    # Who called: a gateway key's name, or for a caller with its own provider key its tenant ("pk:<digest>",
    # never the key): what limits.Limits.who names, so that budgets read their rows as they are.
    Column("who", String(128), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("model", String(256), nullable=False),
    Column("kind", String(16), nullable=False),  # response | compaction | input_tokens | error
    Column("response_id", String(128)),
    Column("trace_id", String(128)),
    Column("status", String(32)),
    Column("input_tokens", BigInteger, nullable=False),  # cached and cache-write tokens included
    Column("cached_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),  # reasoning tokens included
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cost_usd", Numeric(24, 12)),  # None: no known price for the model
    # What the operator's console shows of the call: the time from the request's arrival to its final response
    # (or its refusal), the retries and fallbacks its routing made, and for a request that ended in an error
    # before any response (kind "error", charged nothing) its HTTP status and error code.
    Column("duration_ms", Float),
    Column("retries", SmallInteger),
    Column("fallbacks", SmallInteger),
    Column("http_status", SmallInteger),
    Column("error", String(64)),
)
# What a caller spent since a time (budgets: a UTC day, a month) is one range of this index, cost included so
# that the sum is read from the index alone.
Index("gw_usage_who_at", usage.c.who, usage.c.at, usage.c.cost_usd)
# The report's range of time, and the purge's.
Index("gw_usage_at", usage.c.at)
# A response's rows (the console's page of a response).
Index("gw_usage_response_id", usage.c.response_id)


def page(conn: sa.Connection, table: sa.Table, where: list, *, after: str | None, order: str, limit: int) -> list[dict]:
    """One page of a list of items (``table`` has ``item_id``, ``position`` and ``body``), ``limit + 1`` rows
    so that the caller knows whether more follow: two index lookups and one range scan, however long the list.
    ``after`` is an item id; one not in the list gives an empty page.
    """
    desc = order == "desc"
    position = table.c.position
    if after is not None:
        pos = conn.execute(sa.select(sa.func.min(position)).where(*where, table.c.item_id == after)).scalar()
        if pos is None:
            return []
        where = [*where, position < pos if desc else position > pos]
    rows = conn.execute(
        sa.select(table.c.body).where(*where).order_by(position.desc() if desc else position.asc()).limit(limit + 1)
    )
    return [orjson.loads(row.body) for row in rows]


# Minute-window counts of the keys' limits, where no Redis is configured (limits.py): one row per key and
# window, its count; rows past ``expires`` are removed as new ones are added.
limits = Table(
    "gw_limits",
    metadata,
    Column("name", String(300), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("expires", Float, nullable=False),
)

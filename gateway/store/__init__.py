"""The response store (SQLAlchemy Core): SQLite by default, PostgreSQL for several hosts, one code path.

Every call has a bounded wait: a write is retried with backoff until ``write_timeout`` and then raises
StoreUnavailable, a read raises it at once; the caller answers 503 and acknowledges nothing unrecorded.
Every wait on PostgreSQL ends by the call's deadline and yields to other greenlets (postgres.py).

Nothing is read from the database when the store is made: the schema is checked (created or upgraded) by
the first call that needs it, so a process starts, and answers what needs no store, while the database is
down, and serves again when it is back.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any, NamedTuple, TypeVar

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool

from .. import greenlets
from ..errors import StoreUnavailable, UpstreamError
from .background import BackgroundStore, delete_runs
from .conversations import ConversationStore, StoredConversation, append_in, resendable
from .group import GroupCommit
from .postgres import connect_listener, deadline, remaining
from .tables import INPUT, OBSOLETE_INDEXES, OUTPUT, SCHEMA_VERSION, items, meta, metadata, responses

__all__ = ["ConversationStore", "StoredConversation"]

log = logging.getLogger("gateway")
T = TypeVar("T")
# What a store call may raise when the database is down, frozen, locked or gone: all of it is "unavailable".
_UNAVAILABLE = (DBAPIError, PoolTimeout)
# Called after every store operation with (operation, seconds, error kind or None): the metrics hook.
Observe = Callable[[str, float, str | None], None]

REFERENCE = "item_reference"  # an input item that names a stored item by its id
# Prefixes for the ids the gateway mints for input items that arrive without one.
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
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


class FoundItem(NamedTuple):
    """A stored item found by its id (``Store.items_by_id``)."""

    item: dict  # ready to send again (see ``_resendable``)
    made_by: str | None  # the provider whose response output the item; None for an item only ever input


@dataclasses.dataclass(frozen=True)
class StoredResponse:
    id: str
    tenant: str
    provider: str
    mode: str
    previous_response_id: str | None
    created_at: float
    body: dict


def mint_item_id(item: dict) -> str:
    kind = item.get("type", "message")
    # Any JSON may stand where a type should: an unknown one, or one that is not a string, gets "item".
    return f"{_ID_PREFIX.get(kind, 'item') if isinstance(kind, str) else 'item'}_{uuid.uuid4().hex}"


def input_items_of(request_input: Any, *, mint: bool = True) -> list[dict]:
    """A request's ``input`` as a list of items, each with an id (minted where missing, if ``mint``).

    An item that is nothing but an id refers to a stored item, as the API reads it: its type is
    ``item_reference`` (whose id is never minted: it names the item it refers to).
    """
    if request_input is None:
        return []
    if isinstance(request_input, str):
        raw = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": request_input}]}]
    else:
        raw = [dict(item) for item in request_input]
    for item in raw:
        item.setdefault("type", REFERENCE if item.keys() == {"id"} else "message")
        if mint and item["type"] != REFERENCE and (not isinstance(item.get("id"), str) or not item["id"]):
            item["id"] = mint_item_id(item)
    return raw


# SQLite's own busy handler sleeps inside C, which under gevent stalls every request of the worker; a short
# one absorbs ordinary contention and the write retry loop (which yields) waits out the rest.
_SQLITE_BUSY_MS = 100


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers and one writer work at once across gunicorn workers; NORMAL sync is durable across
    # process crashes in WAL mode.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _private_sqlite_file(url: sa.URL) -> None:
    """Create the SQLite file owner-only (0600): it holds prompts, outputs and the tenant salt.

    SQLite gives its -wal and -shm files the database file's mode, so those follow.
    """
    path = url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)


def make_engine(url: str, *, timeout: float = 5.0) -> Engine:
    """An engine whose every wait is bounded by ``timeout`` seconds: pool checkout, connect, statement."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url in ("sqlite://", "sqlite:///:memory:"):
        # One in-memory database for the whole process (a throwaway store for demos and tests).
        engine = sa.create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    elif url.startswith("sqlite"):
        _private_sqlite_file(sa.make_url(url))
        engine = sa.create_engine(url, pool_size=8, max_overflow=32, pool_pre_ping=False, pool_timeout=timeout)
    if url.startswith("sqlite"):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    millis = max(1, int(timeout * 1000))
    connect_args = {
        "connect_timeout": max(1, int(timeout)),
        # A frozen server or a cut network must not hang a worker: unacknowledged writes and silent
        # connections are given up after the timeout (libpq's TCP_USER_TIMEOUT and keepalives).
        "tcp_user_timeout": millis,
        "keepalives": 1,
        "keepalives_idle": max(1, int(timeout)),
        "keepalives_interval": 1,
        "keepalives_count": 3,
    }
    # The statement timeout travels in the connection's startup options (beside any the URL gives), not in
    # a SET after connecting: a connection that broke between the two would be left for the collector.
    options = sa.make_url(url).query.get("options", "")
    if isinstance(options, tuple):
        options = " ".join(options)
    connect_args["options"] = f"{options} -c statement_timeout={millis}".strip()
    engine = sa.create_engine(
        url, pool_size=8, max_overflow=32, pool_pre_ping=True, pool_timeout=timeout, connect_args=connect_args
    )
    # A lone wait is held to a little over the timeout even outside a store call (a ping, a dispose).
    sa.event.listen(engine, "do_connect", connect_listener(timeout + 1.0))
    return engine


def _first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _kind(exc: BaseException) -> str:
    """A short, bounded name for a store failure, for the metrics label and the log."""
    if isinstance(exc, PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, OperationalError):
        return "operational"
    return type(getattr(exc, "orig", exc)).__name__[:32].lower()


class Store:
    """Every response the gateway relayed, with its owner, provider and items."""

    INSERT_RESPONSE = _INSERT_RESPONSE
    INSERT_ITEMS = _INSERT_ITEMS

    def __init__(self, url: str, *, write_timeout: float = 5.0, observe: Observe | None = None):
        self.url = url
        self.write_timeout = write_timeout
        self.engine = make_engine(url, timeout=write_timeout)
        self._observe = observe
        self.conversations = ConversationStore(self)
        self.background = BackgroundStore(self)
        # Under gevent, records made in one turn of the worker's event loop share a transaction (group.py).
        self._group = GroupCommit(self) if greenlets.active() else None
        self._prepared = False
        self._unready_logged = False
        self._prepare_lock = threading.Lock()  # a greenlet's lock under gevent
        self._secrets: dict[str, str] = {}

    def _call(self, op: str, fn: Callable[[], T], *, retry_for: float = 0.0) -> T:
        """Run ``fn``, retrying a failure with jittered backoff for up to ``retry_for`` seconds.

        Raises StoreUnavailable when the database cannot answer in that time. The whole call, each wait
        inside every attempt included, ends within ``write_timeout`` (or ``retry_for``, if longer).
        """
        started = time.perf_counter()
        now = time.monotonic()
        bound = now + max(retry_for, self.write_timeout)
        if (outer := remaining()) is not None:  # a caller's earlier bound (a group commit's) holds
            bound = min(bound, now + outer)
        retry_until = min(now + retry_for, bound)
        if not self._prepared:
            try:
                self.prepare()
            except StoreUnavailable:
                self._report(op, started, "not_ready")
                raise
        wait = 0.02
        while True:
            try:
                with deadline(bound - time.monotonic()):
                    result = fn()
            except _UNAVAILABLE as exc:
                if isinstance(exc, IntegrityError):
                    raise
                kind = _kind(exc)
                if time.monotonic() + wait >= retry_until:
                    log.warning("store %s failed (%s): %s", op, kind, _first_line(exc))
                    self._report(op, started, kind)
                    raise StoreUnavailable() from exc
                time.sleep(random.uniform(wait / 2, wait))
                wait = min(wait * 2, 0.5)
                continue
            self._report(op, started, None)
            return result

    def prepare(self) -> None:
        """Create or upgrade the schema, once per process; the first store call does it when not done yet.

        Raises StoreUnavailable (logged in one line) when the database cannot be reached or changed within
        ``write_timeout``; the next call tries again.
        """
        with self._prepare_lock:
            if self._prepared:
                return
            try:
                with deadline(self.write_timeout):
                    self.migrate()
            except _UNAVAILABLE as exc:
                # Once per outage, not once per request or readiness probe while it lasts.
                if not self._unready_logged:
                    self._unready_logged = True
                    log.warning("store not ready (%s): %s", _kind(exc), _first_line(exc))
                raise StoreUnavailable() from exc
            if self._unready_logged:
                log.info("store ready")

    def _report(self, op: str, started: float, error: str | None) -> None:
        if self._observe is not None:
            self._observe(op, time.perf_counter() - started, error)

    def ready(self, timeout: float = 1.0) -> tuple[bool, str]:
        """Whether the store answers within ``timeout`` and its schema is the one this code expects, and why not."""
        try:
            with deadline(timeout):
                if not self._prepared:
                    self.prepare()
                with self.engine.connect() as conn:
                    value = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        except StoreUnavailable as exc:
            return False, f"store unavailable ({_kind(exc.__cause__ or exc)})"
        except _UNAVAILABLE as exc:
            return False, f"store unavailable ({_kind(exc)})"
        if value != str(SCHEMA_VERSION):
            return False, f"store schema is {value!r}, this gateway needs {SCHEMA_VERSION}"
        return True, "ok"

    # ------------------------------------------------------------------ schema
    def migrate(self) -> None:
        """Create or upgrade the schema; safe to run from several processes at once."""
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        # Serialise concurrent start-ups: CREATE TABLE IF NOT EXISTS still races in PostgreSQL.
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7251013)"))
                    metadata.create_all(conn)
                    # create_all makes a table's indexes only with the table: an index added since an
                    # existing database was made is created here. On a large PostgreSQL table, build it
                    # beforehand with CREATE INDEX CONCURRENTLY to keep writes flowing; this then finds it.
                    for table in metadata.sorted_tables:
                        for index in table.indexes:
                            index.create(conn, checkfirst=True)
                    for name in OBSOLETE_INDEXES:
                        conn.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
                    self._set_default(conn, "schema_version", str(SCHEMA_VERSION))
                self._prepared = True
                return
            except (OperationalError, ProgrammingError, IntegrityError):
                # Another process created the same table between our check and our CREATE (SQLite).
                if attempt == 4:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _set_default(self, conn: sa.Connection, key: str, value: str) -> str:
        row = conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).first()
        if row is not None:
            return row[0]
        conn.execute(meta.insert().values(key=key, value=value))
        return value

    def secret(self, name: str) -> str:
        """A random secret made once and kept in the store, the same for every process sharing it.

        Read at its first use and kept; raises StoreUnavailable while the store cannot be reached.
        """
        if name in self._secrets:
            return self._secrets[name]

        def write() -> str:
            with self.engine.begin() as conn:
                return self._set_default(conn, name, secrets.token_hex(32))

        for _ in range(3):
            try:
                value = self._call("secret", write, retry_for=self.write_timeout)
            except IntegrityError:
                continue  # another process inserted it first: read theirs
            self._secrets[name] = value
            return value
        raise RuntimeError(f"could not read or create the store secret {name!r}")

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
    ) -> None:
        """Keep a response and its items (input then output) in one transaction; with ``conversation``,
        append the same items to that conversation in the same transaction (nothing, if it is gone).
        """
        try:
            row, rows, turn = self.rows_of(tenant, provider, mode, response, input_items)
        except orjson.JSONEncodeError:
            # Requests are held to a depth the store can write; only a provider's answer can exceed it.
            raise UpstreamError(
                f"The provider '{provider}' answered with JSON nested too deeply to store.",
                code="upstream_invalid_response",
            ) from None

        def alone() -> None:
            self._call("record", write, retry_for=self.write_timeout)

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
        self, tenant: str, provider: str, mode: str, response: dict, input_items: list[dict]
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

        return bool(self._call("delete", write, retry_for=self.write_timeout))

    def purge(self, older_than: float, *, batch: int = 1000, progress: Callable[[int], None] | None = None) -> int:
        """Delete responses created more than ``older_than`` seconds ago, in batches; returns how many.

        Conversations idle for as long (no item added, no metadata changed) go too, with their items.
        """
        cutoff = time.time() - older_than
        while self.conversations.purge(cutoff, batch):
            pass
        total = 0
        while True:
            with self.engine.begin() as conn:
                ids = [
                    r[0]
                    for r in conn.execute(sa.select(responses.c.id).where(responses.c.created_at < cutoff).limit(batch))
                ]
                if not ids:
                    return total
                conn.execute(items.delete().where(items.c.response_id.in_(ids)))
                delete_runs(conn, ids)
                conn.execute(responses.delete().where(responses.c.id.in_(ids)))
            total += len(ids)
            if progress is not None:
                progress(total)

    # ------------------------------------------------------------------ reads
    def owner_of(self, response_id: str) -> str | None:
        """The tenant of a response, or None when the store has never seen it (or it was deleted)."""

        def read() -> str | None:
            with self.engine.connect() as conn:
                return conn.execute(_OWNER, {"id": response_id}).scalar()

        return self._call("owner_of", read)

    def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        def read() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(_GET, {"id": response_id, "tenant": tenant}).first()

        row = self._call("get", read)
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
        desc = order == "desc"

        def read() -> list | None:
            with self.engine.connect() as conn:
                owned = conn.execute(
                    sa.select(responses.c.id).where(responses.c.id == response_id, responses.c.tenant == tenant)
                ).first()
                if owned is None:
                    return None
                where = [items.c.response_id == response_id, items.c.kind == INPUT]
                if after is not None:
                    pos = conn.execute(
                        sa.select(sa.func.min(items.c.position)).where(*where, items.c.item_id == after)
                    ).scalar()
                    if pos is None:
                        return []
                    where.append(items.c.position < pos if desc else items.c.position > pos)
                return conn.execute(
                    sa.select(items.c.body)
                    .where(*where)
                    .order_by(items.c.position.desc() if desc else items.c.position.asc())
                    .limit(limit + 1)
                ).all()

        rows = self._call("input_items", read)
        if rows is None:
            return None
        page = [orjson.loads(r.body) for r in rows[:limit]]
        return page, len(rows) > limit

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

        return [_resendable(row.kind, row.body) for row in self._call("chain_items", read)]

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

        rows = self._call("items_by_id", read) if wanted else []
        return {
            row.item_id: FoundItem(_resendable(row.kind, row.body), row.provider if row.kind == OUTPUT else None)
            if row.tenant == tenant
            else None
            for row in rows
        }

    def count(self) -> int:
        def read() -> int:
            with self.engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(responses)).scalar_one()

        return self._call("count", read)

    def dispose(self) -> None:
        self.engine.dispose()

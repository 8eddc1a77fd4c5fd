"""The store's engine (SQLAlchemy Core): SQLite by default, PostgreSQL for several hosts, one code path.

Every call has a bounded wait: a write is retried with backoff until ``write_timeout`` and then raises
StoreUnavailable, a read raises it at once; the caller answers 503 and acknowledges nothing unrecorded.
Every wait on PostgreSQL ends by the call's deadline and yields to other greenlets (postgres.py).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool

from ..errors import StoreUnavailable
from .postgres import connect_listener, deadline, remaining, reset_deadline, set_deadline
from .tables import ADDED_COLUMNS, OBSOLETE_INDEXES, SCHEMA_VERSION, meta, metadata

log = logging.getLogger("gateway")
T = TypeVar("T")
# What a store call may raise when the database is down, frozen, locked or gone: all of it is "unavailable".
_UNAVAILABLE = (DBAPIError, PoolTimeout)
# Called after every store operation with (operation, seconds, error kind or None): the metrics hook.
Observe = Callable[[str, float, str | None], None]


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


def private_sqlite_file(url: sa.URL) -> None:
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
        private_sqlite_file(sa.make_url(url))
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


def first_line(exc: BaseException) -> str:
    """Why a store call failed, in one line: the driver's own message (through a StoreUnavailable's cause)."""
    if isinstance(exc, StoreUnavailable) and exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def _lasting(exc: BaseException) -> bool:
    """A failure that retrying within seconds cannot cure: the disk is full (SQLite's SQLITE_FULL, PostgreSQL's
    disk_full). Lock waits, restarts and lost connections are worth the retries; this is not.
    """
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlite_errorname", None) == "SQLITE_FULL" or getattr(orig, "sqlstate", None) == "53100"


def _kind(exc: BaseException) -> str:
    """A short, bounded name for a store failure, for the metrics label and the log."""
    if isinstance(exc, PoolTimeout):
        return "pool_timeout"
    if isinstance(exc, OperationalError):
        return "operational"
    return type(getattr(exc, "orig", exc)).__name__[:32].lower()


class _Breaker:
    """The store known to be down: after 3 failed calls within 5 s, calls are refused at once (no wait, no
    provider paid for an answer that could not be recorded), except one a second, which goes through as a
    probe; any success closes it. Per process: each worker finds the outage, and the recovery, itself.
    """

    FAILURES, WINDOW, PROBE_EVERY = 3, 5.0, 1.0

    def __init__(self) -> None:
        self._failures: collections.deque[float] = collections.deque(maxlen=self.FAILURES)
        self._next_probe = 0.0

    def open(self) -> bool:
        failures = self._failures
        return len(failures) == self.FAILURES and failures[-1] - failures[0] <= self.WINDOW

    def known_down(self) -> bool:
        """Open, and not yet time for the next probe (asking does not take the probe's turn)."""
        return self.open() and time.monotonic() < self._next_probe

    def refuses(self) -> bool:
        """Whether this call is refused; when it is the probe's turn, this call is the probe."""
        if not self.open():
            return False
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + self.PROBE_EVERY
            return False
        return True

    def failed(self, *, sustained: bool = False) -> None:
        """One failed call; ``sustained``: a write that failed for its whole retry window, which is outage
        enough on its own (else a store whose every write waits out the window never reaches 3 in 5 s).
        """
        now = time.monotonic()
        for _ in range(self.FAILURES if sustained else 1):
            self._failures.append(now)
        if self.open():
            self._next_probe = now + self.PROBE_EVERY  # this failure was the latest probe

    def succeeded(self) -> None:
        if self._failures:
            self._failures.clear()


def _add_columns(conn: sa.Connection) -> None:
    """The columns of ADDED_COLUMNS a table made by an earlier version lacks, added (create_all does not)."""
    inspector = sa.inspect(conn)
    for table, name in ADDED_COLUMNS:
        if name in {column["name"] for column in inspector.get_columns(table.name)}:
            continue
        column = table.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        # Another process may add it between the look and the ALTER: SQLite's "duplicate column" is an
        # OperationalError, which migrate retries (and then finds the column); PostgreSQL's start-ups queue on
        # the advisory lock.
        conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))


class Database:
    """One engine, and its bounded calls: ``read(op, fn)`` and ``write(op, fn)``, for every sub-store.

    Nothing is read from the database when it is made: the schema is checked (created or upgraded) by the
    first call that needs it, so a process starts, and answers what needs no store, while the database is
    down, and serves again when it is back.
    """

    def __init__(self, url: str, *, write_timeout: float = 5.0, observe: Observe | None = None):
        self.url = url
        self.write_timeout = write_timeout
        self.engine = make_engine(url, timeout=write_timeout)
        self._observe = observe
        # Only PostgreSQL's waits read the call's deadline (postgres.py); SQLite's are bounded by its busy
        # timeout and the retry loop, so its calls skip the deadline's bookkeeping.
        self.deadlines = self.engine.dialect.name == "postgresql"
        self._breaker = _Breaker()
        self._prepared = False
        self._unready_logged = False
        self._prepare_lock = threading.Lock()  # a greenlet's lock under gevent
        self._secrets: dict[str, str] = {}

    def read(self, op: str, fn: Callable[[], T]) -> T:
        """``fn()``, a read: StoreUnavailable at its first failure (the caller answers 503 at once)."""
        return self._call(op, fn)

    def write(self, op: str, fn: Callable[[], T]) -> T:
        """``fn()``, a write: retried with backoff for up to ``write_timeout``, then StoreUnavailable."""
        return self._call(op, fn, retry_for=self.write_timeout)

    def read_in(self, op: str, fn: Callable[[sa.Connection], T]) -> T:
        """``fn(connection)``, a read (see ``read``): the sub-stores' queries."""

        def run() -> T:
            with self.engine.connect() as conn:
                return fn(conn)

        return self.read(op, run)

    def write_in(self, op: str, fn: Callable[[sa.Connection], T]) -> T:
        """``fn(connection)`` in one transaction, a write (see ``write``): the sub-stores' changes."""

        def run() -> T:
            with self.engine.begin() as conn:
                return fn(conn)

        return self.write(op, run)

    def _call(self, op: str, fn: Callable[[], T], *, retry_for: float = 0.0) -> T:
        """Run ``fn``, retrying a failure with jittered backoff for up to ``retry_for`` seconds.

        Raises StoreUnavailable when the database cannot answer in that time. The whole call, each wait
        inside every attempt included, ends within ``write_timeout`` (or ``retry_for``, if longer).
        """
        started = time.perf_counter()
        now = time.monotonic()
        bound = now + max(retry_for, self.write_timeout)
        if self.deadlines and (outer := remaining()) is not None:  # a caller's earlier bound (group commit's)
            bound = min(bound, now + outer)
        retry_until = min(now + retry_for, bound)
        if self._breaker.refuses():
            self._report(op, started, "short_circuit")
            raise StoreUnavailable()
        if not self._prepared:
            try:
                self.prepare()
            except StoreUnavailable:
                self._breaker.failed()
                self._report(op, started, "not_ready")
                raise
        wait = 0.02
        while True:
            try:
                if self.deadlines:
                    token = set_deadline(bound)
                    try:
                        result = fn()
                    finally:
                        reset_deadline(token)
                else:
                    result = fn()
            except _UNAVAILABLE as exc:
                if isinstance(exc, IntegrityError):
                    raise
                kind = _kind(exc)
                lasting = _lasting(exc)
                if lasting or time.monotonic() + wait >= retry_until:
                    log.warning("store %s failed (%s): %s", op, kind, first_line(exc))
                    failing_for = time.monotonic() - now
                    self._breaker.failed(sustained=not lasting and failing_for >= self._breaker.WINDOW / 5)
                    self._report(op, started, kind)
                    raise StoreUnavailable() from exc
                time.sleep(random.uniform(wait / 2, wait))
                wait = min(wait * 2, 0.5)
                continue
            self._breaker.succeeded()
            self._report(op, started, None)
            return result

    def known_down(self) -> bool:
        """True while the store is known to be down (see _Breaker): a create that needs it is refused before
        the provider is paid. ``store: false`` requests without history never ask.
        """
        return self._breaker.known_down()

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
                    log.warning("store not ready (%s): %s", _kind(exc), first_line(exc))
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
        self._breaker.succeeded()  # a readiness probe that got through is as good as any call
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
                    _add_columns(conn)
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
                value = self.write("secret", write)
            except IntegrityError:
                continue  # another process inserted it first: read theirs
            self._secrets[name] = value
            return value
        raise RuntimeError(f"could not read or create the store secret {name!r}")

    def purge_batch(self, op: str, ids: sa.Select, delete: Callable[[sa.Connection, list], None]) -> int:
        """One batch of a purge, a bounded write: the ids ``ids`` selects, handed to ``delete`` in the same
        transaction; how many there were (0: the purge is done).
        """

        def write() -> int:
            with self.engine.begin() as conn:
                found = [row[0] for row in conn.execute(ids)]
                if found:
                    delete(conn, found)
            return len(found)

        return self.write(op, write)

    def dispose(self) -> None:
        self.engine.dispose()

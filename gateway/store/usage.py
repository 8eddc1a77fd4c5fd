"""The usage table's owner: a row for every charged call, written in batches off the request path; what a
caller spent since a time (budgets read it); the usage report; the purge by ``usage_retention``.

A request never waits for its row, and never fails for it: ``add`` appends the row to the process's pending
rows, and a writer (a greenlet under gevent, a thread otherwise), started by a row and ending once none are
left, writes every ``FLUSH_INTERVAL`` all the rows pending in one transaction: a group commit that no
request waits on. A store that cannot take them keeps them pending for the next turn, up to
``MAX_PENDING``; rows past that are lost, counted (``lost``, the metrics hook) and logged once per outage.
Rows still pending when the process ends are written on its way out, in one attempt.
"""

from __future__ import annotations

import atexit
import collections
import datetime
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

from ..errors import StoreUnavailable
from .tables import usage

if TYPE_CHECKING:
    from . import Store

log = logging.getLogger("gateway")

FLUSH_INTERVAL = 0.5  # seconds between the writer's turns: the rows of a turn share one transaction
MAX_PENDING = 10_000  # rows a process keeps while the store cannot take them; more are lost (and counted)
_BATCH = 1000  # rows per INSERT: well under SQLite's and PostgreSQL's limits on bound parameters
_COLUMNS = tuple(c.name for c in usage.columns if c.name != "id")
_INSERT_QMARK = f"INSERT INTO gw_usage ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
_INSERT_FORMAT = f"INSERT INTO gw_usage ({', '.join(_COLUMNS)}) VALUES ({', '.join('%s' for _ in _COLUMNS)})"


def _text(value: Any) -> Any:
    return str(value) if type(value) is Decimal else value


# Failures a retry cannot cure: the rows themselves are refused (too long, a constraint), or the table is not
# what this code expects. Such a batch is lost at once, not kept to fail again.
_REFUSED = (DataError, IntegrityError, ProgrammingError)

# The report's groups, as the query string names them.
GROUPS = {"key": usage.c.who, "provider": usage.c.provider, "model": usage.c.model, "day": usage.c.day}
_TOKENS = ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def period_start(period: str, now: float | None = None) -> float:
    """The Unix time at which the UTC calendar ``period`` ("day" or "month") holding ``now`` began."""
    moment = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    elif period != "day":
        raise ValueError(f"not a period: {period!r} (day or month)")
    return start.timestamp()


def _flush_at_exit(ref: weakref.ref) -> None:
    usage_store = ref()
    if usage_store is None:
        return
    try:
        usage_store.flush(retry=False)
    except Exception:  # the interpreter is going: nothing may stop it (the rows are lost, as in a crash)
        log.debug("usage rows not written at exit", exc_info=True)


class UsageStore:
    """The ``gw_usage`` rows of one store: ``add`` (never waits), ``spent``, ``report``, ``purge``."""

    def __init__(self, store: Store, *, lost: Callable[[int], None] | None = None):
        self._store = store
        self._lost = lost
        self._pending: collections.deque[dict] = collections.deque()
        self._writing = False  # a writer is running (or starting)
        self._flush_lock = threading.Lock()  # one flush at a time: a flush that returns has written what it took
        self._warned = False  # this outage has been logged
        self._closed = False  # the store was disposed of: the writer stops
        self._at_exit = False
        self.max_pending = MAX_PENDING
        self.interval = FLUSH_INTERVAL

    # ------------------------------------------------------------------ writes
    def add(self, row: dict) -> None:
        """Queue one row (the columns of ``gw_usage`` but ``id``); written within ``interval``. Never raises."""
        pending = len(self._pending)
        if pending >= self.max_pending // 2 and row["kind"] == "error":
            # A refusal's row (the console's; nothing charged) gives way first: while the store is down every
            # request is refused, and those rows must not crowd out the rows of calls a provider charged for.
            return
        if pending >= self.max_pending:
            self._lose(1)
            return
        self._pending.append(row)
        self._closed = False
        if not self._writing:
            self._start()

    def _start(self) -> None:
        self._writing = True
        if not self._at_exit:
            self._at_exit = True
            # By a weak reference: an app and its store go when their last user lets them (tests make many).
            atexit.register(_flush_at_exit, weakref.ref(self))
        # A thread is a greenlet where gevent has patched threading (the gevent worker, a background consumer).
        threading.Thread(target=self._run, name="usage-writer", daemon=True).start()

    def _run(self) -> None:
        try:
            while True:
                time.sleep(self.interval)
                if self._closed:
                    return
                self.flush()
                if not self._pending:
                    return
        finally:
            self._writing = False
            # A row added after the last look found a writer still running and started none.
            if self._pending and not self._closed:
                self._start()

    def close(self) -> None:
        """Write the pending rows in one attempt and stop the writer; rows the store does not take are lost."""
        self._closed = True
        self.flush(retry=False)
        if self._pending:
            lost = len(self._pending)
            self._pending.clear()
            self._lose(lost)

    def flush(self, *, retry: bool = True) -> None:
        """Write every pending row now (the writer does this each turn). Never raises: rows the store cannot
        take stay pending, up to ``max_pending``. ``retry=False``: one attempt, not ``store_write_timeout``
        of them (at exit).
        """
        with self._flush_lock:
            while self._pending:
                batch = []
                pending = self._pending
                while pending and len(batch) < _BATCH:
                    batch.append(pending.popleft())
                if not self._write(batch, retry):
                    return

    def _write(self, batch: list[dict], retry: bool) -> bool:
        """One batch, in one transaction; False when the store could not take it (the rows are pending again)."""
        store = self._store

        def insert() -> None:
            with store.engine.begin() as conn:
                # The driver's own executemany: SQLAlchemy's per-row work tripled the cost of a row.
                if conn.dialect.name == "sqlite":  # sqlite3 binds no Decimal: the NUMERIC column takes its text
                    rows = [tuple(_text(row.get(c)) for c in _COLUMNS) for row in batch]
                    conn.exec_driver_sql(_INSERT_QMARK, rows)
                else:
                    conn.exec_driver_sql(_INSERT_FORMAT, [tuple(row.get(c) for c in _COLUMNS) for row in batch])

        try:
            if retry:
                store.write("usage", insert)
            else:
                store.read("usage", insert)  # one attempt: the same bounded call as a read's
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
            if not isinstance(exc, StoreUnavailable) or isinstance(cause, _REFUSED):
                # Rows the store refuses (or a fault of this code): kept, they would fail again on every turn.
                self._warn(f"usage rows refused by the store ({type(cause).__name__}): {len(batch)} lost")
                self._lose(len(batch))
                return True
            room = max(0, self.max_pending - len(self._pending))
            self._pending.extendleft(reversed(batch[:room]))
            if len(batch) > room:
                self._lose(len(batch) - room)
            self._warn(
                f"usage rows cannot be written now (store unavailable): kept for the next try, up to "
                f"{self.max_pending}; past that they are lost (gateway_usage_rows_lost_total)"
            )
            return False
        if self._warned:
            self._warned = False
            log.info("usage rows are written again")
        return True

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(message)

    def _lose(self, count: int) -> None:
        self._warn(f"usage rows lost: more than {self.max_pending} waiting for the store")
        if self._lost is not None:
            self._lost(count)

    # ------------------------------------------------------------------ reads
    def spent(self, who: str, since: float, until: float | None = None) -> Decimal:
        """USD spent by ``who`` (a gateway key's name; for a caller with its own provider key, its tenant
        ``pk:<digest>``) from ``since`` (Unix time; ``period_start("day")``, ``period_start("month")`` for UTC
        calendar budgets) to ``until`` (default: now): the sum of its priced rows, read from one range of
        ``gw_usage_who_at``.
        Rows of unknown price add nothing; rows still pending in a process (up to ``FLUSH_INTERVAL`` old) are
        not counted yet. Raises StoreUnavailable.
        """
        where = [usage.c.who == who, usage.c.at >= since]
        if until is not None:
            where.append(usage.c.at < until)
        query = sa.select(sa.func.sum(usage.c.cost_usd)).where(*where)

        def read() -> Any:
            with self._store.engine.connect() as conn:
                return conn.execute(query).scalar()

        total = self._store.read("usage_spent", read)
        return Decimal(0) if total is None else Decimal(total)

    def report(self, since: float, until: float, group_by: Sequence[str]) -> list[dict]:
        """One row per group (``GROUPS``' names, in ``group_by``'s order) of the rows from ``since`` to
        ``until``: requests, tokens, ``cost_usd`` (a Decimal; None when no row of it had a price) and
        ``unpriced`` (rows of unknown price). Ordered by the groups. Raises StoreUnavailable.
        """
        groups = [GROUPS[name].label(name) for name in group_by]
        sums = [sa.func.sum(usage.c[name]).label(name) for name in _TOKENS]
        unpriced = sa.func.sum(sa.case((usage.c.cost_usd.is_(None), 1), else_=0)).label("unpriced")
        query = (
            sa.select(*groups, sa.func.count().label("requests"), *sums, sa.func.sum(usage.c.cost_usd).label("cost"))
            .add_columns(unpriced)
            # Requests refused before any response (the console's rows of kind "error") used and cost nothing.
            .where(usage.c.at >= since, usage.c.at < until, usage.c.kind != "error")
            .group_by(*[GROUPS[name] for name in group_by])
            .order_by(*[GROUPS[name] for name in group_by])
        )

        def read() -> list:
            with self._store.engine.connect() as conn:
                return conn.execute(query).all()

        out = []
        for row in self._store.read("usage_report", read):
            entry: dict[str, Any] = {name: getattr(row, name) for name in group_by}
            entry["requests"] = int(row.requests)
            for name in _TOKENS:
                entry[name] = int(getattr(row, name) or 0)
            entry["cost_usd"] = None if row.cost is None else Decimal(row.cost)
            entry["unpriced"] = int(row.unpriced or 0)
            out.append(entry)
        return out

    # ------------------------------------------------------------------ retention
    def purge(self, older_than: float, *, batch: int = 1000) -> int:
        """Delete the rows older than ``older_than`` seconds, in batches; returns how many."""
        old = sa.select(usage.c.id).where(usage.c.at < time.time() - older_than).limit(batch)

        def delete(conn: sa.Connection, ids: list) -> None:
            conn.execute(usage.delete().where(usage.c.id.in_(ids)))

        total = 0
        while done := self._store.purge_batch("usage_purge", old, delete):
            total += done
        return total

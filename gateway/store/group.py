"""Group commit: the records a gevent worker's requests reach in one turn of its event loop share one transaction.

Under gevent every request of a worker runs on one thread, and a SQLite write blocks them all; each record
was its own transaction (a connection checked out, two statements, a commit). Here the first record of a
turn of the worker's event loop starts a writer greenlet, which runs once the greenlets already runnable
have run (every request whose provider answered in that turn reaches its record meanwhile) and writes all
the records waiting: two statements and one commit for the lot. On PostgreSQL the write yields, and
records made meanwhile form the next batch. A lone request waits for one greenlet switch more.

Durability is unchanged: each request is answered only after the transaction holding its record commits.
A batch that fails on a constraint is written again record by record, so that each gets the answer a lone
write would give (a retried commit finding its own row, a duplicate id); any other failure is every
record's, as it would have been for each alone. Records with a conversation are written alone: their
appends take the conversation's lock, and one transaction taking several could deadlock with another host's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from .. import greenlets


class _Record:
    __slots__ = ("alone", "done", "error", "row", "rows")

    def __init__(self, row: dict, rows: list[dict], alone: Callable[[], None], done: Any):
        self.row = row
        self.rows = rows
        self.alone = alone
        self.done = done
        self.error: BaseException | None = None


class GroupCommit:
    """One per store and process; only where gevent has patched threading (see ``available``)."""

    def __init__(self, store: Any):
        self._store = store
        self._pending: list[_Record] = []
        self._writing = False

    @staticmethod
    def available() -> bool:
        return greenlets.active()

    def write(self, row: dict, rows: list[dict], alone: Callable[[], None]) -> None:
        """Returns once ``row`` and ``rows`` are committed; raises what ``alone()`` (the lone write) would."""
        import gevent
        from gevent.event import Event

        record = _Record(row, rows, alone, Event())
        self._pending.append(record)
        if not self._writing:
            # A new greenlet starts after the loop's queued callbacks have run, and gevent runs those just
            # before it polls for I/O: every request that can reach its record before then has done so.
            self._writing = True
            gevent.spawn(self._write_pending)
        record.done.wait()
        if record.error is not None:
            raise record.error

    def _write_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                self._write(batch)
        finally:
            self._writing = False

    def _write(self, batch: list[_Record]) -> None:
        try:
            if len(batch) == 1:
                self._settle(batch[0])
                return
            try:
                self._store._call("record", lambda: self._insert(batch), retry_for=self._store.write_timeout)
            except IntegrityError:
                for record in batch:
                    self._settle(record)
                return
            except BaseException as exc:  # every record's failure, as it would have been alone
                for record in batch:
                    record.error = exc
        finally:
            for record in batch:
                record.done.set()

    def _insert(self, batch: list[_Record]) -> None:
        store = self._store
        with store.engine.begin() as conn:
            conn.execute(store.INSERT_RESPONSE, [record.row for record in batch])
            rows = [row for record in batch for row in record.rows]
            if rows:
                conn.execute(store.INSERT_ITEMS, rows)

    @staticmethod
    def _settle(record: _Record) -> None:
        try:
            record.alone()
        except BaseException as exc:
            record.error = exc

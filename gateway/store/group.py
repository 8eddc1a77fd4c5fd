"""Group commit: the records a gevent worker's requests reach in one turn of its event loop share one transaction.

Under gevent every request of a worker runs on one thread, and a SQLite write blocks them all; each record
was its own transaction (a connection checked out, two statements, a commit). Here the first request to
reach its record yields once, so that the greenlets already runnable run (every request whose provider
answered in that turn of the event loop reaches its record meanwhile), then writes all the records
waiting: two statements and one commit for the lot. On PostgreSQL the write yields, and records made
meanwhile form the next batch, written by the oldest of them. A lone request pays one switch to the hub.

Durability is unchanged: each request is answered only after the transaction holding its record commits.
A batch that fails on a constraint is written again record by record, so that each gets the answer a lone
write would give (a retried commit finding its own row, a duplicate id); any other failure is every
record's, as it would have been for each alone. Records with a conversation are written alone: their
appends take the conversation's lock, and one transaction taking several could deadlock with another host's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..errors import StoreUnavailable
from .postgres import reset_deadline, set_deadline


class _Record:
    __slots__ = ("alone", "done", "error", "lead", "row", "rows", "started")

    def __init__(self, row: dict, rows: list[dict], alone: Callable[[], None], done: Any):
        self.started = time.monotonic()
        self.row = row
        self.rows = rows
        self.alone = alone
        self.done = done
        self.error: BaseException | None = None
        self.lead = False


class GroupCommit:
    """One per store and process, made only where gevent has patched threading (``greenlets.active()``)."""

    def __init__(self, store: Any):
        import gevent
        import gevent.event

        self._store = store
        self._pending: list[_Record] = []
        self._writing = False
        self._yield = gevent.sleep
        self._event = gevent.event.Event

    def write(self, row: dict, rows: list[dict], alone: Callable[[], None]) -> None:
        """Returns once ``row`` and ``rows`` are committed; raises what ``alone()`` (the lone write) would."""
        record = _Record(row, rows, alone, self._event())
        self._pending.append(record)
        if self._writing:
            record.done.wait()
            if not record.lead:
                if record.error is not None:
                    raise record.error
                return
        else:
            self._writing = True
        # This request writes the batch, in its own greenlet: a writer greenlet of its own made every
        # record switch stacks with it (a greenlet's stack copied out and back), which cost more than it saved
        # when the batch is of one.
        try:
            if not record.lead:
                # gevent runs the loop's queued callbacks before this one: every request that can reach
                # its record before the loop next polls for I/O does so and joins the batch.
                self._yield(0)
            batch, self._pending = self._pending, []
            self._write(batch)
        finally:
            if self._pending:
                # Records made while this batch was written (PostgreSQL yields): the oldest leads the next.
                self._pending[0].lead = True
                self._pending[0].done.set()
            else:
                self._writing = False
        if record.error is not None:
            raise record.error

    def _write(self, batch: list[_Record]) -> None:
        settled = False
        store = self._store
        # A record's bound counts from its request's arrival, its wait behind the batch before included: on
        # a frozen database, records queued behind a batch would otherwise wait its bound and then their own.
        # (Only PostgreSQL's waits read it.)
        token = set_deadline(min(r.started for r in batch) + store.write_timeout) if store.deadlines else None
        try:
            if len(batch) == 1:
                self._settle(batch[0])
            else:
                try:
                    store.write("record", lambda: self._insert(batch))
                except IntegrityError:
                    for record in batch:
                        self._settle(record)
                except Exception as exc:  # every record's failure, as it would have been alone
                    for record in batch:
                        record.error = exc
            settled = True
        finally:
            if token is not None:
                reset_deadline(token)
            for record in batch:
                if not settled and record.error is None:
                    # The writer was stopped (its greenlet killed) before the outcome was known.
                    record.error = StoreUnavailable()
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
        except Exception as exc:
            record.error = exc

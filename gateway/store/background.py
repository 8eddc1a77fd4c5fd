"""Background runs in the store: the run (status, lease, job) and its numbered events, their queries and retention.

One code path for SQLite and PostgreSQL. Every state change of a run is one compare-and-set on its row, so a
consumer, a cancel and a reader that finds an expired lease can race from any host: exactly one wins, and the
others see that they lost. Events are written in the transaction that moves ``last_seq``, so a reader that
sees a number finds every event up to it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from .conversations import append_in
from .tables import INPUT, events, items, responses, runs

if TYPE_CHECKING:
    from decimal import Decimal

    from . import Store

ACTIVE = ("queued", "in_progress")

# (the response as stored, every stored event's payload, the number for the closing event)
#   -> (the response as it ends, the closing event's payload)
Settle = Callable[[dict, list[dict], int], tuple[dict, dict]]

# The queued run to take next: its tenant has the fewest runs in progress, and it is that tenant's oldest.
_busy = runs.alias("busy")
_FAIREST = (
    sa.select(runs.c.response_id)
    .where(runs.c.status == "queued")
    .order_by(
        sa.select(sa.func.count())
        .select_from(_busy)
        .where(_busy.c.tenant == runs.c.tenant, _busy.c.status == "in_progress")
        .scalar_subquery(),
        runs.c.created_at,
    )
    .limit(1)
    # PostgreSQL: consumers claiming at once each get a different run (SQLite takes one writer at a time).
    .with_for_update(skip_locked=True)
)
_RUN = sa.select(runs).where(runs.c.response_id == sa.bindparam("id"))
_EVENTS_AFTER = (
    sa.select(events.c.seq, events.c.type, events.c.body)
    .where(events.c.response_id == sa.bindparam("id"), events.c.seq > sa.bindparam("after"))
    .order_by(events.c.seq)
    .limit(sa.bindparam("limit"))
)
_INSERT_EVENTS = events.insert()
_APPEND = (
    runs.update()
    .where(
        runs.c.response_id == sa.bindparam("id"),
        runs.c.owner == sa.bindparam("b_owner"),
        runs.c.status == "in_progress",
    )
    .values(last_seq=sa.bindparam("b_last_seq"), lease_until=sa.bindparam("b_lease"))
)


class LimitReached(Exception):
    """The tenant already has as many live background runs as the limit allows; ``unproven``: the limit
    was the one tenants without a completed response share.
    """

    def __init__(self, unproven: bool = False):
        super().__init__()
        self.unproven = unproven


# Tenants of callers' own provider keys ("pk:…") are anyone with a made-up key until one of their responses
# completes; gateway keys ("key:…") are the operator's.
_UNPROVEN_PREFIX = "pk:"


@dataclasses.dataclass(frozen=True)
class RunState:
    response_id: str
    tenant: str
    status: str
    owner: str | None
    lease_until: float | None
    last_seq: int
    ended_at: float | None

    @property
    def live(self) -> bool:
        return self.status in ACTIVE

    def expired(self, now: float) -> bool:
        return self.status == "in_progress" and self.lease_until is not None and self.lease_until < now


@dataclasses.dataclass(frozen=True)
class Claimed:
    response_id: str
    tenant: str
    job: str
    last_seq: int


def _state(row: Any) -> RunState:
    return RunState(row.response_id, row.tenant, row.status, row.owner, row.lease_until, row.last_seq, row.ended_at)


def _event_rows(response_id: str, payloads: list[dict]) -> list[dict]:
    return [
        {
            "response_id": response_id,
            "seq": p["sequence_number"],
            "type": str(p.get("type"))[:64],
            "body": orjson.dumps(p).decode(),
        }
        for p in payloads
    ]


class BackgroundStore:
    """Runs and their events, reached as ``store.background``."""

    def __init__(self, store: Store):
        self._store = store

    @property
    def _engine(self) -> sa.Engine:
        return self._store.engine

    # ------------------------------------------------------------------ create
    def submit(
        self,
        *,
        tenant: str,
        provider: str,
        response: dict,
        input_items: list[dict],
        job: str,
        first_events: list[dict],
        limit: int,
        unproven_limit: int = 0,
    ) -> None:
        """Record a queued background response, its input items, its run and its first events, in one
        transaction. Raises LimitReached when the tenant has ``limit`` live runs already (0: no limit), or
        when it has no completed response yet and such tenants have ``unproven_limit`` live runs between
        them (0: no limit).
        """
        row, item_rows, _ = self._store.rows_of(tenant, provider, "background", response, input_items)
        now = time.time()
        values = {
            "response_id": response["id"],
            "tenant": tenant,
            "status": "queued",
            "job": job,
            "owner": None,
            "lease_until": None,
            "last_seq": first_events[-1]["sequence_number"] if first_events else -1,
            "created_at": now,
            "ended_at": None,
        }
        columns = list(values)
        chosen = sa.select(*[sa.bindparam(f"v_{c}", values[c], type_=runs.c[c].type) for c in columns])
        if limit > 0:
            live = (
                sa.select(sa.func.count())
                .select_from(runs)
                .where(runs.c.tenant == tenant, runs.c.status.in_(ACTIVE))
                .scalar_subquery()
            )
            chosen = chosen.where(live < limit)
        proven = sa.exists().where(responses.c.tenant == tenant, responses.c.status == "completed")
        if unproven_limit > 0 and tenant.startswith(_UNPROVEN_PREFIX):
            others = sa.exists().where(responses.c.tenant == runs.c.tenant, responses.c.status == "completed")
            unproven_live = (
                sa.select(sa.func.count())
                .select_from(runs)
                .where(runs.c.status.in_(ACTIVE), runs.c.tenant.startswith(_UNPROVEN_PREFIX), ~others)
                .scalar_subquery()
            )
            chosen = chosen.where(sa.or_(proven, unproven_live < unproven_limit))
        # One statement counts and inserts: SQLite runs it under its single write lock; PostgreSQL first
        # serialises the tenant's creates with a transaction-scoped advisory lock (see _lock_tenant).
        # RETURNING says whether the row went in (rowcount is not reported for INSERT ... SELECT by every driver).
        insert = runs.insert().from_select(columns, chosen).returning(runs.c.response_id)

        def write() -> None:
            with self._engine.begin() as conn:
                _lock_tenant(conn, tenant)
                if conn.execute(insert).first() is None:
                    # Which limit: the tenant's own when it is at it, else the one unproven tenants share.
                    mine = conn.execute(
                        sa.select(sa.func.count()).where(runs.c.tenant == tenant, runs.c.status.in_(ACTIVE))
                    ).scalar()
                    raise LimitReached(unproven=not (limit > 0 and mine >= limit))
                conn.execute(self._store.INSERT_RESPONSE, row)
                if item_rows:
                    conn.execute(self._store.INSERT_ITEMS, item_rows)
                if first_events:
                    conn.execute(_INSERT_EVENTS, _event_rows(response["id"], first_events))

        self._store.write("background_submit", write)

    # ------------------------------------------------------------------ the consumer's side
    def claim(self, response_id: str, owner: str, lease_until: float) -> Claimed | None:
        """Take a queued run for ``owner``: the fairest one, not necessarily ``response_id``; None when no run is
        queued any more.

        Every queued run has one message in the queue, and each message takes one run: which one is chosen
        here, so that the queue serves tenants fairly rather than in the order they sent. The fairest is the
        oldest queued run of the tenants with the fewest runs in progress: a tenant that queued 400 runs has
        them run one beside each other tenant's, not before them.
        """

        def write() -> Claimed | None:
            with self._engine.begin() as conn:
                while True:
                    chosen = conn.execute(_FAIREST).scalar()
                    if chosen is None:
                        return None  # nothing queued: this message's run was taken by another's
                    done = conn.execute(
                        runs.update()
                        .where(runs.c.response_id == chosen, runs.c.status == "queued")
                        .values(status="in_progress", owner=owner, lease_until=lease_until)
                    ).rowcount
                    if done:
                        break
                row = conn.execute(_RUN, {"id": chosen}).first()
                conn.execute(responses.update().where(responses.c.id == chosen).values(status="in_progress"))
                return Claimed(row.response_id, row.tenant, row.job or "", row.last_seq)

        return self._store.write("background_claim", write)

    def append(self, response_id: str, owner: str, payloads: list[dict], lease_until: float) -> bool:
        """Add events (numbered already) while ``owner`` still runs the response; False once it does not."""

        def write() -> bool:
            with self._engine.begin() as conn:
                moved = conn.execute(
                    _APPEND,
                    {
                        "id": response_id,
                        "b_owner": owner,
                        "b_last_seq": payloads[-1]["sequence_number"],
                        "b_lease": lease_until,
                    },
                ).rowcount
                if not moved:
                    return False
                conn.execute(_INSERT_EVENTS, _event_rows(response_id, payloads))
                return True

        if not payloads:
            return True
        return self._store.write("background_append", write)

    def finish(
        self,
        response_id: str,
        owner: str,
        payloads: list[dict],
        *,
        tenant: str,
        provider: str,
        response: dict,
        input_items: list[dict],
        conversation: str | None,
        cost: Decimal | None = None,
    ) -> bool:
        """The run's end as its consumer saw it: the last events (the closing one last), the final response
        and its items, and the turn's items appended to ``conversation``, in one transaction. False when the
        run was no longer this consumer's (cancelled, failed by another, deleted): nothing is written then.
        """
        row, item_rows, turn = self._store.rows_of(tenant, provider, "background", response, input_items, cost)
        status = row["status"] or "completed"

        def write() -> bool:
            with self._engine.begin() as conn:
                moved = conn.execute(
                    runs.update()
                    .where(runs.c.response_id == response_id, runs.c.owner == owner, runs.c.status == "in_progress")
                    .values(status=status, last_seq=payloads[-1]["sequence_number"], job=None, ended_at=time.time())
                ).rowcount
                if not moved:
                    return False
                conn.execute(_INSERT_EVENTS, _event_rows(response_id, payloads))
                conn.execute(
                    responses.update()
                    .where(responses.c.id == response_id)
                    .values(
                        status=row["status"], model=row["model"], provider=provider, body=row["body"], cost_usd=cost
                    )
                )
                conn.execute(items.delete().where(items.c.response_id == response_id))
                if item_rows:
                    conn.execute(self._store.INSERT_ITEMS, item_rows)
                if conversation is not None:
                    append_in(conn, tenant, conversation, [(INPUT, i) for i in input_items] + turn, response_id)
                return True

        return self._store.write("background_finish", write)

    def renew(self, owner: str, response_ids: Collection[str], lease_until: float) -> set[str]:
        """Extend ``owner``'s lease on its runs; returns those of them it no longer runs (cancelled, failed
        by another, deleted), which it must stop.
        """
        ids = list(response_ids)

        def write() -> set[str]:
            with self._engine.begin() as conn:
                conn.execute(
                    runs.update()
                    .where(runs.c.owner == owner, runs.c.status == "in_progress", runs.c.response_id.in_(ids))
                    .values(lease_until=lease_until)
                )
                return _not_running(conn, owner, ids)

        if not ids:
            return set()
        return self._store.write("background_renew", write)

    def lost(self, owner: str, response_ids: Collection[str]) -> set[str]:
        """Which of ``owner``'s runs it no longer runs: a read, made often, so a cancel is seen at once."""
        ids = list(response_ids)

        def read() -> set[str]:
            with self._engine.connect() as conn:
                return _not_running(conn, owner, ids)

        if not ids:
            return set()
        return self._store.read("background_lost", read)

    def expired(self, now: float, limit: int = 100) -> list[str]:
        """Running responses whose consumer's lease ran out before ``now``."""

        def read() -> list[str]:
            with self._engine.connect() as conn:
                return [
                    r[0]
                    for r in conn.execute(
                        sa.select(runs.c.response_id)
                        .where(runs.c.status == "in_progress", runs.c.lease_until < now)
                        .limit(limit)
                    )
                ]

        return self._store.read("background_expired", read)

    # ------------------------------------------------------------------ cancel, fail
    def stale_queued(self, now: float, timeout: float, limit: int = 100) -> tuple[list[str], list[str]]:
        """Queued runs no consumer took within ``timeout``: (those to put on the queue again, once, marked
        by their ``lease_until`` so that another host does not; those re-queued that long ago and still
        waiting, to end failed). The mark is one conditional update: each run is re-queued exactly once.
        """

        def write() -> tuple[list[str], list[str]]:
            with self._engine.begin() as conn:
                waiting = [
                    r[0]
                    for r in conn.execute(
                        sa.select(runs.c.response_id)
                        .where(runs.c.status == "queued", runs.c.lease_until.is_(None))
                        .where(runs.c.created_at < now - timeout)
                        .limit(limit)
                    )
                ]
                again = []
                if waiting:
                    marked = conn.execute(
                        runs.update()
                        .where(runs.c.response_id.in_(waiting), runs.c.status == "queued")
                        .where(runs.c.lease_until.is_(None))
                        .values(lease_until=now)
                        .returning(runs.c.response_id)
                    )
                    again = [r[0] for r in marked]
                given_up = [
                    r[0]
                    for r in conn.execute(
                        sa.select(runs.c.response_id)
                        .where(runs.c.status == "queued", runs.c.lease_until < now - timeout)
                        .limit(limit)
                    )
                ]
            return again, given_up

        return self._store.write("background_stale", write)

    def end(
        self, response_id: str, status: str, settle: Settle, *, only_expired: bool = False, only_queued: bool = False
    ) -> dict | None:
        """End a live run from outside its consumer (a cancel, a lease that ran out): the final response
        and the closing event made by ``settle`` from the stored ones, in one transaction. None when the run
        was not live (or, with ``only_expired``, when its lease had not run out).
        """

        def write() -> dict | None:
            now = time.time()
            where = [runs.c.response_id == response_id, runs.c.status.in_(ACTIVE)]
            if only_expired:
                where += [runs.c.status == "in_progress", runs.c.lease_until < now]
            if only_queued:  # a consumer that took it meanwhile keeps it
                where += [runs.c.status == "queued"]
            with self._engine.begin() as conn:
                # The update takes the row's lock first: a consumer appending at the same moment waits, then
                # finds the run no longer its own. Events it committed before are read below.
                if not conn.execute(runs.update().where(*where).values(status=status, job=None, ended_at=now)).rowcount:
                    return None
                last_seq = conn.execute(sa.select(runs.c.last_seq).where(runs.c.response_id == response_id)).scalar()
                body = conn.execute(sa.select(responses.c.body).where(responses.c.id == response_id)).scalar()
                stored = [
                    orjson.loads(r[0])
                    for r in conn.execute(
                        sa.select(events.c.body).where(events.c.response_id == response_id).order_by(events.c.seq)
                    )
                ]
                final, closing = settle(orjson.loads(body) if body else {"id": response_id}, stored, last_seq + 1)
                conn.execute(_INSERT_EVENTS, _event_rows(response_id, [closing]))
                conn.execute(runs.update().where(runs.c.response_id == response_id).values(last_seq=last_seq + 1))
                conn.execute(
                    responses.update()
                    .where(responses.c.id == response_id)
                    .values(status=final.get("status"), body=orjson.dumps(final).decode())
                )
                return final

        return self._store.write("background_end", write)

    # ------------------------------------------------------------------ reads
    def state(self, response_id: str) -> RunState | None:
        def read() -> Any:
            with self._engine.connect() as conn:
                return conn.execute(_RUN, {"id": response_id}).first()

        row = self._store.read("background_state", read)
        return _state(row) if row is not None else None

    def progress(self, response_ids: Collection[str]) -> dict[str, tuple[int, str, float | None]]:
        """(last_seq, status, lease_until) of each run, by id: one query for every stream a process follows."""
        ids = list(response_ids)

        def read() -> list:
            with self._engine.connect() as conn:
                return conn.execute(
                    sa.select(runs.c.response_id, runs.c.last_seq, runs.c.status, runs.c.lease_until).where(
                        runs.c.response_id.in_(ids)
                    )
                ).all()

        return {
            r.response_id: (r.last_seq, r.status, r.lease_until) for r in self._store.read("background_progress", read)
        }

    def events_after(self, response_id: str, after: int, limit: int = 500) -> list[tuple[int, str, str]]:
        """(seq, type, JSON payload) of the events numbered after ``after``, oldest first, at most ``limit``."""

        def read() -> list:
            with self._engine.connect() as conn:
                return conn.execute(_EVENTS_AFTER, {"id": response_id, "after": after, "limit": limit}).all()

        return [(r.seq, r.type, r.body) for r in self._store.read("background_events", read)]

    def all_events(self, response_id: str) -> list[dict]:
        def read() -> list:
            with self._engine.connect() as conn:
                return conn.execute(
                    sa.select(events.c.body).where(events.c.response_id == response_id).order_by(events.c.seq)
                ).all()

        return [orjson.loads(r[0]) for r in self._store.read("background_events", read)]

    # ------------------------------------------------------------------ retention
    def purge_events(self, cutoff: float, batch: int = 1000) -> int:
        """Forget up to ``batch`` runs that ended before ``cutoff``, with their events; returns how many.

        Their responses stay readable (GET); only the replay of their events goes.
        """

        def delete(conn: sa.Connection, ids: list) -> None:
            conn.execute(events.delete().where(events.c.response_id.in_(ids)))
            conn.execute(runs.delete().where(runs.c.response_id.in_(ids)))

        ended = sa.select(runs.c.response_id).where(runs.c.ended_at < cutoff).limit(batch)
        return self._store.purge_batch("purge_events", ended, delete)


def delete_runs(conn: sa.Connection, response_ids: list[str]) -> None:
    """Remove the runs and events of responses being deleted (a live one's consumer then stops)."""
    conn.execute(events.delete().where(events.c.response_id.in_(response_ids)))
    conn.execute(runs.delete().where(runs.c.response_id.in_(response_ids)))


def _lock_tenant(conn: sa.Connection, tenant: str) -> None:
    """Serialise a tenant's background creates for the rest of the transaction (the limit's count).

    PostgreSQL only: its READ COMMITTED statements could each count below the limit and both insert.
    SQLite's one writer at a time already serialises the counting insert.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7251014, hashtext(:t))"), {"t": tenant})


def _not_running(conn: Any, owner: str, ids: list[str]) -> set[str]:
    """Which of ``ids`` ``owner`` is not running (any more): ended, cancelled, or taken over."""
    ours = conn.execute(
        sa.select(runs.c.response_id).where(
            runs.c.response_id.in_(ids), runs.c.owner == owner, runs.c.status == "in_progress"
        )
    )
    return set(ids) - {r[0] for r in ours}

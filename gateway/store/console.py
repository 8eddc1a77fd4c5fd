"""What the operator's console reads, across every tenant: the latest calls, a call's rows, spend over time,
recent error rates, conversations and background runs; each one bounded query (the console is the admin
key's alone: gateway/console checks that before any of these runs). Its one write: the sessions ended by a
logout, in ``gw_meta`` until they would have expired anyway.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from .tables import conversation_items, conversations, events, meta, responses, runs, usage

if TYPE_CHECKING:
    from . import Store

# The traffic page's filters, as its query string names them.
FILTERS = {"key": usage.c.who, "provider": usage.c.provider, "model": usage.c.model}
# A status filter: a response's final status, or "error" for calls refused before any response.
STATUSES = ("completed", "incomplete", "failed", "cancelled", "error")
# How far back the traffic page looks: a filter that matches nothing recent must not scan the whole table.
TRAFFIC_WINDOW = 7 * 86400


def _row(row: Any) -> dict:
    out = dict(row._mapping)
    cost = out.get("cost_usd")
    if cost is not None:
        out["cost_usd"] = Decimal(cost)
    return out


class ConsoleStore:
    def __init__(self, store: Store):
        self._store = store

    def _all(self, op: str, query: sa.Select) -> list[dict]:
        return self._store.read_in(op, lambda conn: [_row(row) for row in conn.execute(query)])

    # ------------------------------------------------------------------ traffic
    def calls(self, filters: Mapping[str, str], limit: int = 100, after: int | None = None) -> list[dict]:
        """The latest usage rows, newest first, matching ``filters`` (FILTERS' names and ``status``);
        ``after``: only rows newer than that row id (the page's live updates).
        """
        where = [usage.c.at >= time.time() - TRAFFIC_WINDOW]
        for name, column in FILTERS.items():
            if filters.get(name):
                where.append(column == filters[name])
        status = filters.get("status")
        if status == "error":
            where.append(usage.c.kind == "error")
        elif status:
            where.append(sa.and_(usage.c.status == status, usage.c.kind != "error"))
        if after is not None:
            where.append(usage.c.id > after)
        return self._all("console_calls", sa.select(usage).where(*where).order_by(usage.c.id.desc()).limit(limit))

    def choices(self, since: float) -> dict[str, list[str]]:
        """The keys, providers and models seen since ``since``: the traffic filters' options."""

        def read(conn: sa.Connection) -> dict[str, list[str]]:
            out = {}
            for name, column in FILTERS.items():
                query = sa.select(column).where(usage.c.at >= since).distinct().order_by(column).limit(200)
                out[name] = [value for (value,) in conn.execute(query) if value]
            return out

        return self._store.read_in("console_choices", read)

    def rows_of(self, response_id: str) -> list[dict]:
        """The usage rows of one response (its own call; a compaction of it), oldest first."""
        query = sa.select(usage).where(usage.c.response_id == response_id).order_by(usage.c.id).limit(100)
        return self._all("console_rows_of", query)

    def call(self, row_id: int) -> dict | None:
        found = self._all("console_call", sa.select(usage).where(usage.c.id == row_id))
        return found[0] if found else None

    # ------------------------------------------------------------------ spend
    def spend_series(self, since: float, bucket: int, by: str) -> list[tuple[int, str, Decimal]]:
        """(bucket start, group, USD) of the priced rows since ``since``, ``bucket`` seconds wide, grouped by
        ``by`` (a FILTERS name)."""
        column = FILTERS[by]
        # The bucket's width as a literal, not a bound parameter: the same expression is selected and grouped
        # by, and a driver that numbers its parameters would see two different ones.
        width = sa.literal_column(str(int(bucket)))
        if self._store.engine.dialect.name == "sqlite":
            slot: Any = sa.cast(usage.c.at / width, sa.Integer)  # truncation: the floor of a positive time
        else:
            slot = sa.func.floor(usage.c.at / width)
        since = since // bucket * bucket  # the first bucket whole
        query = (
            sa.select(slot.label("slot"), column.label("name"), sa.func.sum(usage.c.cost_usd).label("cost"))
            .where(usage.c.at >= since, usage.c.kind != "error")
            .group_by(sa.literal_column("slot"), column)
            .order_by(sa.literal_column("slot"))
        )

        def read(conn: sa.Connection) -> list:
            return [(int(row.slot) * bucket, row.name, Decimal(row.cost or 0)) for row in conn.execute(query)]

        return self._store.read_in("console_spend", read)

    def totals(self, since: float, by: str) -> list[dict]:
        """Calls, tokens and USD per ``by`` (a FILTERS name) since ``since``, the costliest first."""
        column = FILTERS[by]
        cost = sa.func.sum(usage.c.cost_usd)
        query = (
            sa.select(
                column.label("name"),
                sa.func.count().label("calls"),
                sa.func.sum(usage.c.input_tokens).label("input_tokens"),
                sa.func.sum(usage.c.output_tokens).label("output_tokens"),
                cost.label("cost_usd"),
            )
            .where(usage.c.at >= since, usage.c.kind != "error")
            .group_by(column)
            .order_by(sa.func.coalesce(cost, 0).desc(), column)
            .limit(100)
        )
        return self._all("console_totals", query)

    # ------------------------------------------------------------------ health
    def error_rates(self, since: float) -> list[dict]:
        """Per provider since ``since``: calls, and the failed ones: a response that ended ``failed``, or a call
        that ended in a 5xx before any response (a caller's own 4xx, a limit's 429, are not the provider's)."""
        failed = sa.case((sa.or_(usage.c.http_status >= 500, usage.c.status == "failed"), 1), else_=0)
        query = (
            sa.select(
                usage.c.provider.label("provider"),
                sa.func.count().label("calls"),
                sa.func.sum(failed).label("failed"),
                sa.func.avg(usage.c.duration_ms).label("duration_ms"),
            )
            .where(usage.c.at >= since)
            .group_by(usage.c.provider)
            .order_by(usage.c.provider)
        )
        return self._all("console_error_rates", query)

    # ------------------------------------------------------------------ conversations
    def conversations(self, limit: int = 50) -> list[dict]:
        query = (
            sa.select(
                conversations.c.id,
                conversations.c.tenant,
                conversations.c.created_at,
                conversations.c.updated_at,
                conversations.c.next_position.label("items"),
            )
            .order_by(conversations.c.updated_at.desc())
            .limit(limit)
        )
        return self._all("console_conversations", query)

    def conversation(self, conversation_id: str, limit: int = 200) -> tuple[dict | None, list[dict]]:
        """A conversation's row and its latest ``limit`` items, in order."""

        def read(conn: sa.Connection) -> tuple[dict | None, list[dict]]:
            head = conn.execute(sa.select(conversations).where(conversations.c.id == conversation_id)).first()
            if head is None:
                return None, []
            query = (
                sa.select(conversation_items.c.position, conversation_items.c.response_id, conversation_items.c.body)
                .where(conversation_items.c.conversation_id == conversation_id)
                .order_by(conversation_items.c.position.desc())
                .limit(limit)
            )
            items = [
                {"position": row.position, "response_id": row.response_id, "item": orjson.loads(row.body)}
                for row in conn.execute(query)
            ]
            info = dict(head._mapping)
            info["meta"] = orjson.loads(info["meta"])
            return info, items[::-1]

        return self._store.read_in("console_conversation", read)

    # ------------------------------------------------------------------ background runs
    def runs(self, limit: int = 50, live_only: bool = False) -> list[dict]:
        query = sa.select(
            runs.c.response_id,
            runs.c.tenant,
            runs.c.status,
            runs.c.owner,
            runs.c.last_seq,
            runs.c.created_at,
            runs.c.ended_at,
            responses.c.provider,
            responses.c.model,
        ).select_from(runs.outerjoin(responses, responses.c.id == runs.c.response_id))
        if live_only:
            query = query.where(runs.c.status.in_(("queued", "in_progress")))
        return self._all("console_runs", query.order_by(runs.c.created_at.desc()).limit(limit))

    def run(self, response_id: str, limit: int = 500) -> tuple[dict | None, list[dict]]:
        """A run's row and its first ``limit`` events: (seq, type, payload)."""

        def read(conn: sa.Connection) -> tuple[dict | None, list[dict]]:
            head = conn.execute(
                sa.select(runs.c.response_id, runs.c.tenant, runs.c.status, runs.c.owner, runs.c.last_seq)
                .add_columns(runs.c.created_at, runs.c.ended_at, runs.c.lease_until)
                .where(runs.c.response_id == response_id)
            ).first()
            if head is None:
                return None, []
            query = (
                sa.select(events.c.seq, events.c.type, events.c.body)
                .where(events.c.response_id == response_id)
                .order_by(events.c.seq)
                .limit(limit)
            )
            found = [{"seq": row.seq, "type": row.type, "body": row.body} for row in conn.execute(query)]
            return dict(head._mapping), found

        return self._store.read_in("console_run", read)

    # ------------------------------------------------------------------ sessions
    def end_session(self, sid: str, expires: float) -> None:
        """Remember a logged-out session until ``expires`` (when its cookie would stop working anyway), and
        forget the ones whose time has passed."""
        now = time.time()

        def write(conn: sa.Connection) -> None:
            ended = conn.execute(
                sa.select(meta.c.key, meta.c.value).where(meta.c.key.startswith(_ENDED, autoescape=True))
            )
            stale = [key for key, value in ended if _expiry(value) < now]
            if stale:
                conn.execute(meta.delete().where(meta.c.key.in_(stale)))
            conn.execute(meta.delete().where(meta.c.key == _ENDED + sid))
            conn.execute(meta.insert().values(key=_ENDED + sid, value=repr(expires)))

        self._store.write_in("console_logout", write)

    def session_ended(self, sid: str) -> bool:
        query = sa.select(meta.c.value).where(meta.c.key == _ENDED + sid)
        return self._store.read_in("console_session", lambda conn: conn.execute(query).first() is not None)


_ENDED = "console_ended:"


def _expiry(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0  # not one of ours: gone with the stale ones

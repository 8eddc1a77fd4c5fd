"""The usage report: what the gateway's callers spent, from the usage table, grouped by key, provider, model and
UTC day; served at ``GET /v1/gateway/usage`` (api/usage.py) and printed by ``gateway usage`` (cli.py).
"""

from __future__ import annotations

import datetime
import time
from decimal import Decimal
from typing import Any

from .config import did_you_mean, parse_age
from .errors import InvalidRequest
from .spend import plain
from .store.usage import GROUPS, UsageStore

DEFAULT_SINCE = "7d"
# The sums of each row of the report, as the report names them.
SUMS = ("requests", "input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def moment(text: str, param: str, now: float) -> float:
    """``7d`` (an age: that long before ``now``), ``2025-06-01`` (that UTC midnight) or an ISO 8601 date and time
    (UTC unless it says otherwise) -> Unix time. Raises InvalidRequest naming ``param``.
    """
    text = text.strip()
    try:
        return now - parse_age(text)
    except ValueError:
        pass
    try:
        if len(text) == 10:
            day = datetime.date.fromisoformat(text)
            return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"{param} must be an age (7d, 12h), a date (2025-06-01) or an ISO 8601 date and time, not {text[:64]!r}.",
            param=param,
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=datetime.UTC)).timestamp()


def groups(text: str | None) -> list[str]:
    """``key,provider`` -> ["key", "provider"]; None: all four. Raises InvalidRequest for a name not in GROUPS."""
    if text is None:
        return list(GROUPS)
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in GROUPS:
            raise InvalidRequest(
                f"Unknown group {name[:32]!r}{did_you_mean(name, GROUPS)}: group_by takes {', '.join(GROUPS)}, "
                "comma-separated.",
                param="group_by",
            )
    return list(dict.fromkeys(names))


def report(
    store: UsageStore, since: str = DEFAULT_SINCE, until: str | None = None, group_by: str | None = None
) -> dict:
    """The report over ``since`` to ``until`` (default: now): ``data``, one object per group with its sums and
    ``cost_usd`` (a Decimal; None when none of its calls had a known price), and ``total``. ``as_json`` makes
    it JSON, ``table`` text.

    Raises InvalidRequest for a bad argument, StoreUnavailable when the store cannot be read.
    """
    now = time.time()
    start = moment(since, "since", now)
    end = moment(until, "until", now) if until else now
    if end < start:
        raise InvalidRequest("until is before since.", param="until")
    names = groups(group_by)
    rows = store.report(start, end, names)
    total: dict[str, Any] = dict.fromkeys(SUMS, 0)
    total_cost: Decimal | None = None
    unpriced = 0
    for row in rows:
        for name in SUMS:
            total[name] += row[name]
        if row["cost_usd"] is not None:
            total_cost = row["cost_usd"] if total_cost is None else total_cost + row["cost_usd"]
        unpriced += row["unpriced"]
    total["cost_usd"], total["unpriced"] = total_cost, unpriced
    return {
        "object": "gateway.usage",
        "since": _iso(start),
        "until": _iso(end),
        "group_by": names,
        "data": rows,
        "total": total,
    }


def as_json(made: dict) -> dict:
    """A report with its costs as JSON numbers: Decimal is not one of JSON's types, and a string would not add
    up in a client.
    """
    return {**made, "data": [_json(row) for row in made["data"]], "total": _json(made["total"])}


def _iso(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _json(row: dict) -> dict:
    cost = row["cost_usd"]
    return {**row, "cost_usd": None if cost is None else float(cost)}


def table(made: dict) -> str:
    """The report as a text table (``gateway usage``): a line per group, then the total."""
    names = made["group_by"]
    header = [*names, *SUMS[:2], "output_tokens", "cost_usd", "unpriced"]
    lines = [header]
    for row in [*made["data"], {**made["total"], **dict.fromkeys(names[:1], "total")}]:
        cost = row["cost_usd"]
        lines.append(
            [
                *(str(row.get(name, "")) for name in names),
                str(row["requests"]),
                str(row["input_tokens"]),
                str(row["output_tokens"]),
                "-" if cost is None else plain(cost),
                str(row["unpriced"]),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    numeric = len(names)  # the sums are aligned right
    out = []
    for line in lines:
        cells = [
            cell.ljust(w) if i < numeric else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"

"""Limits per gateway key (and a default for every caller without limits of its own): requests and tokens
per minute, counted across hosts; USD per UTC day and month, read from the usage table; the models allowed.

Minute windows are fixed windows (the minute of the clock), counted where every host sees them: Redis through
the ``limits`` library's storage (``limits_store``), else the gateway's store (``gw_limits``). Each count is
one atomic increment, so N requests pass across any number of hosts and the next is refused, exactly.
Tokens are reserved before the call (this turn's input, counted offline, plus ``max_output_tokens``) and
settled from the response's ``usage`` after.

A counter that cannot be reached: ``limits_fail = "open"`` lets the request through (said once per outage in
the log, counted, and named in ``/readyz``), ``"closed"`` refuses it (503 ``limits_unavailable``).
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import logging
import math
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import GatewayError

log = logging.getLogger("gateway")

_FIELDS = ("requests_per_minute", "tokens_per_minute", "usd_per_day", "usd_per_month", "models")


@dataclasses.dataclass(frozen=True)
class Policy:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    models: tuple[str, ...] | None = None  # names or globs ("mock-*"); None: every model

    def allows_model(self, model: Any) -> bool:
        if self.models is None:
            return True
        return isinstance(model, str) and any(fnmatch.fnmatchcase(model, pattern) for pattern in self.models)


def parse_policy(table: Any, where: str) -> tuple[Policy | None, list[tuple[str, str]]]:
    """A ``[...limits]`` table -> (Policy, []), or (None, [(key, why), ...]) naming each mistake."""
    if not isinstance(table, Mapping):
        return None, [(where, "must be a table of limits")]
    errors = []
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{where}.{name}"
        if name not in _FIELDS:
            errors.append((key, f"unknown limit (known: {', '.join(_FIELDS)})"))
        elif name == "models":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                errors.append((key, "must be a list of model names or globs"))
            else:
                values[name] = tuple(value)
        elif name in ("requests_per_minute", "tokens_per_minute"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                errors.append((key, f"must be a whole number of 0 or more, not {value!r}"))
            else:
                values[name] = value
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            errors.append((key, f"must be a number of US dollars, 0 or more, not {value!r}"))
        else:
            values[name] = float(value)
    return (None, errors) if errors else (Policy(**values), [])


class Unavailable(Exception):
    """The counter could not be reached."""


class RedisCounter:
    """Fixed-window counts in Redis, through the ``limits`` library's storage (one Lua INCRBY + EXPIRE)."""

    def __init__(self, url: str, timeout: float):
        from limits.storage import RedisStorage

        self._storage = RedisStorage(
            url, key_prefix="aigw", socket_timeout=timeout, socket_connect_timeout=timeout, wrap_exceptions=True
        )

    def add(self, key: str, amount: int, expiry: int) -> int:
        try:
            return self._storage.incr(key, expiry, amount)
        except Exception as exc:  # the library wraps the client's errors; any failure is "not reachable"
            raise Unavailable(str(exc)) from exc


class StoreCounter:
    """Fixed-window counts in the gateway's store (``gw_limits``): one upsert that returns the count."""

    def __init__(self, store: Any):
        self._store = store

    def add(self, key: str, amount: int, expiry: int) -> int:
        from .errors import StoreUnavailable

        try:
            return self._store.limits.add(key, amount, time.time() + expiry)
        except StoreUnavailable as exc:
            raise Unavailable("the store") from exc


class SqliteCounter:
    """Fixed-window counts where the store is a SQLite file: in a SQLite file of their own beside it (SQLite
    is one host's, so its workers are all that share it). Not in the store's file: a worker waiting there
    for a response's or a usage batch's write lock would wait inside SQLite's C code, where gevent cannot
    run another greenlet. The counts need no durability (a minute's worth): no fsync, one connection per
    process, each add one statement.
    """

    def __init__(self, path: str):
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def add(self, key: str, amount: int, expiry: int) -> int:
        try:
            with self._lock:
                conn = self._conn or self._open()
                count = conn.execute(_SQLITE_ADD, (key, amount, time.time() + expiry)).fetchone()[0]
                if random.randrange(500) == 0:  # now and then, the windows that have ended
                    conn.execute("DELETE FROM gw_limits WHERE expires < ?", (time.time(),))
                return int(count)
        except sqlite3.Error as exc:
            self._conn = None
            raise Unavailable(str(exc)) from exc

    def _open(self) -> sqlite3.Connection:
        fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600)  # owner-only, as the store's file is
        os.close(fd)
        conn = sqlite3.connect(self._path, timeout=0.5, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS gw_limits "
            "(name TEXT PRIMARY KEY, count INTEGER NOT NULL, expires REAL NOT NULL)"
        )
        self._conn = conn
        return conn


_SQLITE_ADD = (
    "INSERT INTO gw_limits (name, count, expires) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET count = count + excluded.count RETURNING count"
)


class MemoryCounter:
    """Fixed-window counts in this process: where the store itself is in memory (one process, no sharing)."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def add(self, key: str, amount: int, expiry: int) -> int:
        now = time.time()
        with self._lock:
            count = self._counts.get(key, (0, 0.0))[0] + amount
            self._counts[key] = (count, now + expiry)
            if len(self._counts) > 10000:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            return count


@dataclasses.dataclass
class Held:
    """What a create's check decided, for its reply: the headers, and the tokens to settle."""

    headers: dict[str, str]
    token_key: str | None = None
    reserved: int = 0


def _duration(seconds: float) -> str:
    """OpenAI's reset form: ``6m0s``, ``1s``, ``250ms``."""
    if seconds < 1:
        return f"{max(1, int(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class Limits:
    """The limits of every caller, their counters, and the checks a create makes."""

    def __init__(
        self,
        keys: Mapping[str, Policy],
        default: Policy | None,
        counter: Any,
        *,
        fail: str = "open",
        spent: Callable[[str, float], float | None] | None = None,
        count_tokens: Callable[[dict], int] | None = None,
        unavailable: Callable[[], None] | None = None,
    ):
        self.keys, self.default, self.counter, self.fail = dict(keys), default, counter, fail
        self._spent = spent
        self._count_tokens = count_tokens
        self._counted = unavailable  # counts each check made without the counter
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._spend_cache: dict[tuple[str, float], tuple[float, float | None]] = {}
        self.outages = 0  # counted, for /metrics and /readyz

    @property
    def active(self) -> bool:
        return bool(self.keys) or self.default is not None

    def policy_for(self, caller: Any) -> Policy | None:
        if caller.gateway_key is not None:
            found = self.keys.get(caller.gateway_key)
            if found is not None:
                return found
        return self.default

    def who(self, caller: Any) -> str:
        return caller.gateway_key if caller.gateway_key is not None else caller.tenant

    def state(self) -> dict:
        """For ``/readyz``: whether the counter answered last time, and the policy when it does not."""
        if not self.active:
            return {"status": "off"}
        if self._down_since is None:
            return {"status": "ok"}
        return {"status": "unavailable", "since": int(self._down_since), "fail": self.fail, "outages": self.outages}

    # -- the checks ----------------------------------------------------------------------------------------

    def check(self, caller: Any, body: dict) -> Held | None:
        """Before the provider is called: raises the refusal (403, 429, 503), else what the reply is to say."""
        policy = self.policy_for(caller)
        if policy is None:
            return None
        model = body.get("model")
        if not policy.allows_model(model):
            raise GatewayError(
                f"The model '{model}' is not allowed for this key.", param="model", code="model_not_allowed", status=403
            )
        who = self.who(caller)
        now = time.time()
        window = int(now // 60) * 60
        reset = window + 60 - now
        held = Held(headers={})
        if policy.requests_per_minute is not None:
            limit = policy.requests_per_minute
            count = self._add(f"rpm:{who}:{window}", 1)
            if count is not None:
                remaining = max(0, limit - count)
                held.headers.update(
                    {
                        "x-ratelimit-limit-requests": str(limit),
                        "x-ratelimit-remaining-requests": str(remaining),
                        "x-ratelimit-reset-requests": _duration(reset),
                    }
                )
                if count > limit:
                    raise _refused(
                        f"Rate limit reached for requests per minute: limit {limit}, used {limit}.", reset, held
                    )
        if policy.tokens_per_minute is not None:
            limit = policy.tokens_per_minute
            reserve = self._reserve(body)
            key = f"tpm:{who}:{window}"
            count = self._add(key, reserve)
            if count is not None:
                if count > limit:
                    self._add(key, -reserve)  # given back: the request is not made
                    used = count - reserve
                    held.headers.update(_token_headers(limit, max(0, limit - used), reset))
                    raise _refused(
                        f"Rate limit reached for tokens per minute: limit {limit}, used {used}, requested {reserve}.",
                        reset,
                        held,
                    )
                held.headers.update(_token_headers(limit, max(0, limit - count), reset))
                held.token_key, held.reserved = key, reserve
        for budget, since, until, label in self._budgets(policy, now):
            spent = self._spent_since(who, since)
            if spent is not None and spent >= budget:
                err = GatewayError(
                    f"This key has spent its {label} budget of {budget:g} USD ({spent:.4f} USD spent).",
                    code="insufficient_quota",
                    status=429,
                    headers={**held.headers, "x-should-retry": "false", "Retry-After": str(math.ceil(until - now))},
                )
                err.type = "insufficient_quota"
                raise err
        return held

    def settle(self, held: Held, response: Any) -> None:
        """The tokens reserved, made the tokens the response used (its ``usage``), in the same window."""
        if held.token_key is None:
            return
        usage = response.get("usage") if isinstance(response, dict) else None
        used = usage.get("total_tokens") if isinstance(usage, dict) else None
        if not isinstance(used, int):
            used = 0 if not isinstance(response, dict) or response.get("status") == "failed" else held.reserved
        if used != held.reserved:
            self._add(held.token_key, used - held.reserved)

    def _budgets(self, policy: Policy, now: float) -> list[tuple[float, float, float, str]]:
        if policy.usd_per_day is None and policy.usd_per_month is None:
            return []
        today = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        out = []
        if policy.usd_per_day is not None:
            tomorrow = today + datetime.timedelta(days=1)
            out.append((policy.usd_per_day, today.timestamp(), tomorrow.timestamp(), "daily"))
        if policy.usd_per_month is not None:
            first = today.replace(day=1)
            following = (first + datetime.timedelta(days=32)).replace(day=1)
            out.append((policy.usd_per_month, first.timestamp(), following.timestamp(), "monthly"))
        return out

    def _spent_since(self, who: str, since: float) -> float | None:
        """USD spent since ``since``, from the usage table, kept a second per worker (a burst reads it once)."""
        if self._spent is None:
            return None
        now = time.monotonic()
        cached = self._spend_cache.get((who, since))
        if cached is not None and now - cached[0] < 1.0:
            return cached[1]
        try:
            value = self._spent(who, since)
        except Exception as exc:  # the store: as a counter that cannot be reached
            self._unreachable(exc)
            return None
        if len(self._spend_cache) > 10000:
            self._spend_cache.clear()
        self._spend_cache[(who, since)] = (now, value)
        return value

    def _reserve(self, body: dict) -> int:
        counted = self._count_tokens(body) if self._count_tokens is not None else 0
        out = body.get("max_output_tokens")
        return counted + (out if isinstance(out, int) and not isinstance(out, bool) and out > 0 else 0)

    def _add(self, key: str, amount: int) -> int | None:
        """The count after adding; None when the counter is down and ``limits_fail`` is open."""
        if self._down_since is not None and time.monotonic() < self._retry_at:
            # Down a moment ago: asked again a second later, not by every request (a Redis that hangs would
            # hold each for the socket timeout).
            self._unreachable(None)
            return None
        try:
            count = self.counter.add(key, amount, 120)
        except Unavailable as exc:
            self._retry_at = time.monotonic() + 1.0
            self._unreachable(exc)
            return None
        if self._down_since is not None:
            with self._lock:
                if self._down_since is not None:
                    log.warning("limits store reachable again")
                    self._down_since = None
        return count

    def _unreachable(self, exc: BaseException | None) -> None:
        if self._counted is not None:
            self._counted()
        with self._lock:
            if self._down_since is None and exc is not None:
                self._down_since = time.time()
                self.outages += 1
                log.warning(
                    "limits store unreachable (%s): requests are %s until it is back",
                    str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                    "let through" if self.fail == "open" else "refused",
                )
        if self.fail == "closed":
            raise GatewayError(
                "The gateway cannot check this key's limits right now.",
                code="limits_unavailable",
                status=503,
                headers={"Retry-After": "1"},
            )


def _token_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {
        "x-ratelimit-limit-tokens": str(limit),
        "x-ratelimit-remaining-tokens": str(remaining),
        "x-ratelimit-reset-tokens": _duration(reset),
    }


def _refused(message: str, reset: float, held: Held) -> GatewayError:
    err = GatewayError(
        message, code="rate_limit_exceeded", status=429, headers={**held.headers, "Retry-After": str(math.ceil(reset))}
    )
    err.type = "tokens" if "tokens" in message else "requests"  # OpenAI's types for rate limits
    return err


def from_settings(settings: Any, store: Any, unavailable: Callable[[], None] | None = None) -> Limits:
    """The gateway's limits: every key's, the default, the counter ``limits_store`` names (else the store)."""
    keys = {}
    for name, entry in (settings.keys or {}).items():
        if isinstance(entry, Mapping) and "limits" in entry:
            policy, _ = parse_policy(entry["limits"], f"keys.{name}.limits")  # checked with the settings
            if policy is not None:
                keys[name] = policy
    default = None
    if "default" in (settings.limits or {}):
        default, _ = parse_policy(settings.limits["default"], "limits.default")
    counter = _counter(settings)
    if counter is None:
        counter = StoreCounter(store)
    usage = getattr(store, "usage", None)
    return Limits(
        keys,
        default,
        counter,
        fail=settings.limits_fail,
        spent=getattr(usage, "spent", None),
        count_tokens=input_tokens,
        unavailable=unavailable,
    )


def _counter(settings: Any) -> Any:
    """Redis where ``limits_store`` names it; beside a SQLite store, a SQLite file of the counts' own; in
    memory beside an in-memory store; else None (the store's ``gw_limits``: PostgreSQL).
    """
    if settings.limits_store:
        return RedisCounter(settings.limits_store, 0.5)
    url = settings.store_url
    if url in ("sqlite://", "sqlite:///:memory:"):
        return MemoryCounter()
    if url.startswith("sqlite:///") and "?" not in url:
        return SqliteCounter(url[len("sqlite:///") :] + "-limits")
    return None


def input_tokens(body: dict) -> int:
    """This turn's input and instructions, counted offline: the tokens a request reserves before its call."""
    from .tokens import count_offline

    texts = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
    raw = body.get("input")
    if isinstance(raw, str):
        texts.append(raw)
    elif isinstance(raw, list):
        for item in raw:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
            elif isinstance(item, dict):
                texts.extend(v for k, v in item.items() if k in ("output", "arguments") and isinstance(v, str))
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    return count_offline(model, {"messages": [{"role": "user", "content": "\n".join(texts)}]})[0]

"""What each call to a provider cost, and its charge: a usage row, the request's trace, the counters.

Prices: the operator's (``[prices."PROVIDER/MODEL"]``, USD per million tokens), else, for a provider that takes
a key, the data bundled in genai-prices (read from the installed package, never fetched at run time); a
provider that takes no key (a local server: mock, ollama, vllm...) costs nothing unless priced. A model with
no known price has a cost of None, not 0, and is counted as unpriced.

The cost of a Responses ``usage``: ``input_tokens`` include the cached ones
(``input_tokens_details.cached_tokens``) and the cache-write ones (``input_tokens_details.cache_write_tokens``),
``output_tokens`` include the reasoning ones (``output_tokens_details.reasoning_tokens``); each part is priced
at its own rate: cached at ``cached_input`` (else input's), cache writes at ``cache_write`` (else input's),
reasoning at ``reasoning`` (else output's). In Decimal throughout.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .auth import Caller
    from .observe import Observer, Trace
    from .providers import Provider
    from .store.usage import UsageStore

log = logging.getLogger("gateway")

COST_HEADER = "x-gateway-cost-usd"  # on JSON replies: what the request cost, a decimal string
ZERO = Decimal(0)
MILLION = Decimal(1_000_000)
# Lookups kept per (provider, model, service tier): model names come from callers and providers, so the cache
# is emptied when it grows past this, rather than growing without end.
_CACHE_MAX = 4096
_NANO = Decimal(1_000_000_000)

# Prices that change with the time (a day's off-peak hours, a date a new price starts) are looked up again
# after this many seconds.
_RECHECK = 60.0
_FOREVER = float("inf")


@dataclasses.dataclass(frozen=True, slots=True)
class Tiered:
    """A rate that depends on the call's input tokens: all its tokens at the rate of the highest tier it passes
    (genai-prices' tiers, e.g. a model's price above 200k tokens of context).
    """

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...]  # (start, rate), by start

    def at(self, input_tokens: int) -> Decimal:
        rate = self.base
        for start, tier_rate in self.tiers:
            if input_tokens <= start:
                break
            rate = tier_rate
        return rate


@dataclasses.dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of each kind."""

    input: Decimal | Tiered
    cached_input: Decimal | Tiered
    cache_write: Decimal | Tiered
    output: Decimal | Tiered
    reasoning: Decimal | Tiered
    source: str  # "settings", "genai-prices", or "free" (a provider that takes no key)

    # The five rates in billionths of a dollar per million tokens, when none depends on the input's size and
    # each is a whole number of those: a call's cost is then five integer products and one division.
    flat: tuple[int, ...] | None = dataclasses.field(init=False, default=None, compare=False)

    def __post_init__(self) -> None:
        rates = (self.input, self.cached_input, self.cache_write, self.output, self.reasoning)
        if all(type(r) is Decimal for r in rates):
            scaled = [r * _NANO for r in rates]  # type: ignore[operator]
            if all(v == v.to_integral_value() for v in scaled):
                object.__setattr__(self, "flat", tuple(int(v) for v in scaled))


FREE = Price(ZERO, ZERO, ZERO, ZERO, ZERO, "free")


class Tokens(NamedTuple):
    """The token counts of one call; ``input`` includes ``cached`` and ``cache_write``, ``output`` ``reasoning``.

    A named tuple, not a frozen dataclass: one is made for every response, and a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``.
    """

    input: int = 0
    cached: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0


NO_TOKENS = Tokens()


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def tokens_of(usage: Any) -> Tokens:
    """The counts of a Responses ``usage`` object; a missing or malformed count is 0."""
    if not isinstance(usage, dict):
        return NO_TOKENS
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    out_details = usage.get("output_tokens_details")
    reasoning = out_details.get("reasoning_tokens") if isinstance(out_details, dict) else 0
    return Tokens(
        input=_count(usage.get("input_tokens")),
        cached=_count(details.get("cached_tokens")),
        cache_write=_count(details.get("cache_write_tokens")),
        output=_count(usage.get("output_tokens")),
        reasoning=_count(reasoning),
    )


def cost_of(price: Price, tokens: Tokens) -> Decimal:
    """USD for ``tokens`` at ``price``: each part of the input and of the output at its own rate."""
    n = tokens.input
    flat = price.flat
    if flat is not None:
        nanos = (
            max(n - tokens.cached - tokens.cache_write, 0) * flat[0]
            + tokens.cached * flat[1]
            + tokens.cache_write * flat[2]
            + max(tokens.output - tokens.reasoning, 0) * flat[3]
            + tokens.reasoning * flat[4]
        )
        return Decimal(nanos).scaleb(-15)  # exact: the same figure as the Decimal sum below

    def rate(value: Decimal | Tiered) -> Decimal:
        return value if type(value) is Decimal else value.at(n)  # type: ignore[union-attr]

    plain_input = max(n - tokens.cached - tokens.cache_write, 0)
    plain_output = max(tokens.output - tokens.reasoning, 0)
    total = (
        plain_input * rate(price.input)
        + tokens.cached * rate(price.cached_input)
        + tokens.cache_write * rate(price.cache_write)
        + plain_output * rate(price.output)
        + tokens.reasoning * rate(price.reasoning)
    )
    return total / MILLION


def plain(cost: Decimal) -> str:
    """A cost as a decimal string without exponent or trailing zeros: ``0.00042``, ``0``."""
    text = format(cost, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _decimal(value: float | int) -> Decimal:
    # Through str: 0.05 in a TOML file means five hundredths, not the binary float nearest to it.
    return Decimal(str(value))


def _from_settings(entry: Mapping[str, Any]) -> Price:
    """A ``[prices."PROVIDER/MODEL"]`` table (config.price_errors checked it) -> a Price."""
    given = {key: _decimal(value) for key, value in entry.items()}
    return Price(
        input=given["input"],
        cached_input=given.get("cached_input", given["input"]),
        cache_write=given.get("cache_write", given["input"]),
        output=given["output"],
        reasoning=given.get("reasoning", given["output"]),
        source="settings",
    )


def _rate(value: Any) -> Decimal | Tiered | None:
    """One of genai-prices' rates (a Decimal, or its TieredPrices) as this module's."""
    if value is None or isinstance(value, Decimal):
        return value
    return Tiered(value.base, tuple((tier.start, tier.price) for tier in value.tiers))


def _from_genai(model_price: Any) -> Price | None:
    """genai-prices' ModelPrice -> a Price; None when it prices no text tokens (an image or audio model)."""
    base = _rate(model_price.input_mtok)
    output = _rate(model_price.output_mtok)
    if base is None and output is None:
        return None
    base = ZERO if base is None else base
    output = ZERO if output is None else output
    cached = _rate(model_price.cache_read_mtok)
    written = _rate(model_price.cache_write_mtok)
    return Price(
        input=base,
        cached_input=base if cached is None else cached,
        cache_write=base if written is None else written,
        output=output,
        reasoning=output,
        source="genai-prices",
    )


class Prices:
    """The price of a provider's model: the settings', else genai-prices' bundled data; each lookup kept."""

    def __init__(self, overrides: Mapping[str, Mapping[str, Any]]):
        self._exact: dict[tuple[str, str], Price] = {}
        self._globs: dict[str, list[tuple[str, Price]]] = {}
        for name, entry in overrides.items():
            provider, _, model = name.partition("/")
            price = _from_settings(entry)
            if any(c in model for c in "*?["):
                self._globs.setdefault(provider, []).append((model, price))
            else:
                self._exact[(provider, model)] = price
        for globs in self._globs.values():
            globs.sort(key=lambda pair: len(pair[0]), reverse=True)  # the longest glob that matches wins
        self._cache: dict[tuple[str, str, str | None], tuple[Price | None, float]] = {}
        self._snapshot: Any = None

    def load(self) -> None:
        """Read genai-prices' bundled data now: at start-up, in the worker (the collector then leaves it be,
        see gunicorn_config.post_worker_init), not at the first request. Its ``UpdatePrices``, which fetches
        newer data, is never started.
        """
        from genai_prices import data_snapshot

        self._snapshot = data_snapshot.get_snapshot()

    def price(self, provider: Provider, model: str, service_tier: str | None = None) -> Price | None:
        """``model``'s price at ``provider`` (``service_tier``: the tier the response says it ran in); None
        when no price is known.
        """
        key = (provider.name, model, service_tier)
        found = self._cache.get(key)
        if found is not None and found[1] > time.monotonic():
            return found[0]
        price, recheck = self._lookup(provider, model, service_tier)
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (price, recheck)
        return price

    def _lookup(self, provider: Provider, model: str, service_tier: str | None) -> tuple[Price | None, float]:
        own = self._exact.get((provider.name, model))
        if own is None:
            own = next((p for glob, p in self._globs.get(provider.name, ()) if fnmatch.fnmatchcase(model, glob)), None)
        if own is not None:
            return own, _FOREVER
        if not provider.key_required:
            return FREE, _FOREVER
        if self._snapshot is None:
            self.load()
        try:
            _, info = self._snapshot.find_provider_model(model, None, provider.name, None)
        except LookupError:  # a provider or a model genai-prices does not know
            return None, _FOREVER
        try:
            context = {"service_tier": service_tier} if service_tier else None
            price = _from_genai(info.get_prices(datetime.datetime.now(datetime.UTC), context))
        except Exception:  # a fault in the library's data: the call is unpriced, and never fails for it
            log.warning("genai-prices could not price %s/%s", provider.name, model[:64], exc_info=True)
            return None, _FOREVER
        # A list of prices is prices that change with the date or the hour; variants start on a date.
        changes = isinstance(info.prices, list) or any(v.constraint is not None for v in info.price_variants or ())
        return price, time.monotonic() + _RECHECK if changes else _FOREVER


class Spend:
    """Charges each call the gateway makes to a provider: its cost, a usage row, the trace's cost, the counters."""

    def __init__(self, prices: Prices, usage: UsageStore, observer: Observer):
        self.prices = prices
        self._usage = usage
        self._observer = observer
        self._day: tuple[int, str] = (-1, "")

    def charge(
        self,
        caller: Caller,
        trace: Trace,
        provider: Provider,
        usage: Any,
        *,
        model: Any,
        response_id: Any = None,
        status: Any = None,
        kind: str = "response",
        service_tier: Any = None,
    ) -> Decimal | None:
        """Charge one call of ``caller``'s to ``provider`` that used ``usage`` (a Responses usage object; None:
        no tokens, as for a token count): its cost in USD, None when the model has no known price (zero tokens
        cost 0 whatever the model). Never raises for the store: the usage row is written later, off the
        request path (store/usage.py).
        """
        model = model if isinstance(model, str) else ""
        tokens = tokens_of(usage)
        if tokens == NO_TOKENS:
            cost: Decimal | None = ZERO
        else:
            price = self.prices.price(provider, model, service_tier if isinstance(service_tier, str) else None)
            cost = None if price is None else cost_of(price, tokens)
        now = time.time()
        self._usage.add(
            {
                "at": now,
                "day": self._utc_day(now),
                "who": (caller.gateway_key if caller.gateway_key is not None else caller.tenant)[:128],
                "provider": provider.name[:64],
                "model": model[:256],
                "kind": kind,
                "response_id": response_id[:128] if isinstance(response_id, str) else None,
                "trace_id": trace.trace_id[:128] or None,
                "status": status[:32] if isinstance(status, str) else None,
                "input_tokens": tokens.input,
                "cached_tokens": tokens.cached,
                "cache_write_tokens": tokens.cache_write,
                "output_tokens": tokens.output,
                "reasoning_tokens": tokens.reasoning,
                "cost_usd": cost,
                "duration_ms": (time.perf_counter() - trace.started) * 1000,
                "retries": trace.retries,
                "fallbacks": trace.fallbacks,
                "http_status": None,
                "error": None,
            }
        )
        trace.charged(cost)
        self._observer.charged(provider.name, model, caller.gateway_key, cost)
        return cost

    def refused(self, trace: Trace, who: str, http_status: int, error: str) -> None:
        """A request that ended in an error before any response was charged (a provider's error, a limit, a
        store outage): a usage row of kind "error" that costs nothing, so that the console's traffic shows
        failures beside the calls. The usage report and the budgets leave these rows out.
        """
        now = time.time()
        self._usage.add(
            {
                "at": now,
                "day": self._utc_day(now),
                "who": who[:128],
                "provider": (trace.provider or "")[:64],
                "model": (trace.model or "")[:256],
                "kind": "error",
                "response_id": None,
                "trace_id": trace.trace_id[:128] or None,
                "status": "error",
                "input_tokens": 0,
                "cached_tokens": 0,
                "cache_write_tokens": 0,
                "output_tokens": 0,
                "reasoning_tokens": 0,
                "cost_usd": ZERO,
                "duration_ms": (time.perf_counter() - trace.started) * 1000,
                "retries": trace.retries,
                "fallbacks": trace.fallbacks,
                "http_status": http_status,
                "error": error[:64],
            }
        )

    def _utc_day(self, now: float) -> str:
        number = int(now // 86400)
        if self._day[0] != number:
            self._day = (number, time.strftime("%Y-%m-%d", time.gmtime(now)))
        return self._day[1]

"""What each request did: one Trace per request, logged as one JSON line and counted in Prometheus metrics.

Metrics are correct across gunicorn workers in prometheus_client's multiprocess mode (gunicorn.conf.py
sets it up and removes a worker's files when it exits).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from decimal import Decimal
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

access_log = logging.getLogger("gateway.access")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_MAX_LABEL = 64


@dataclasses.dataclass
class Trace:
    """Plain facts about one request, filled in by the layers it passes through."""

    trace_id: str
    method: str
    path: str
    started: float = dataclasses.field(default_factory=time.perf_counter)
    tenant: str | None = None
    provider: str | None = None
    model: str | None = None
    mode: str | None = None  # "native" | "emulated"
    stream: bool = False
    status: int = 0
    retries: int = 0
    fallbacks: int = 0
    upstream_ms: float | None = None  # the answering call: to the full body, or to a stream's first event
    first_event_ms: float | None = None  # the gateway's own time to its first streamed byte
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    omitted_tools: str | None = None  # tool types a chat provider was not shown (hosted_tools = "omit")
    truncated_items: int | None = None  # history items the provider was not sent (truncation: "auto")
    # What the request cost in USD, every call it made to a provider together (gateway/spend.py); None
    # when nothing was charged, or when a call had no known price (then ``unpriced`` is True).
    cost_usd: Decimal | None = None
    unpriced: bool | None = None
    prompt: Any = None  # only when the operator turns prompt logging on

    def usage_from(self, response: Any) -> None:
        usage = response.get("usage") if isinstance(response, dict) else None
        if isinstance(usage, dict):
            self.input_tokens = usage.get("input_tokens")
            self.output_tokens = usage.get("output_tokens")

    def charged(self, cost: Decimal | None) -> None:
        """One call's cost added to the request's; ``None`` (no known price) leaves the request's unknown."""
        if cost is None:
            self.unpriced, self.cost_usd = True, None
        elif not self.unpriced:
            self.cost_usd = cost if self.cost_usd is None else self.cost_usd + cost

    def as_log(self) -> dict:
        # A shallow read: dataclasses.asdict would deep-copy the logged prompt on every request.
        out = {name: v for name in _LOGGED if (v := getattr(self, name)) is not None}
        out["latency_ms"] = round((time.perf_counter() - self.started) * 1000, 3)
        for key in ("upstream_ms", "first_event_ms"):
            if key in out:
                out[key] = round(out[key], 3)
        if "cost_usd" in out:
            out["cost_usd"] = float(out["cost_usd"])  # a JSON number, to be summed by whatever reads the log
        return out


_LOGGED = tuple(f.name for f in dataclasses.fields(Trace) if f.name != "started")


# Tool types the platform runs, as openai-python names them: the label values of gateway_omitted_tools_total.
_HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "image_generation",
        "computer",
        "computer_use_preview",
        "mcp",
        "shell",
        "tool_search",
    }
)


class Observer:
    """Owns the metrics of one app and writes the access log."""

    def __init__(self, *, multiprocess_dir: str = "", log_prompts: bool = False, max_models: int = 100):
        self.multiprocess_dir = multiprocess_dir
        self.log_prompts = log_prompts
        # Models are caller-chosen strings: the first ``max_models`` seen get their own series, the rest
        # share "other", so no caller can grow the metrics without end.
        self._max_models = max_models
        self._models: set[str] = set()
        # Each metric's child per label values, looked up once: prometheus_client's labels() checks and
        # converts the values and takes a lock on every call. Bounded as the label values are.
        self._children: dict[tuple, Any] = {}
        self.registry = CollectorRegistry()
        labels = ("provider", "model", "mode", "status")
        r = self.registry
        self.requests = Counter("gateway_requests_total", "Requests answered", ("endpoint", *labels), registry=r)

        def seconds(name: str, doc: str, names: tuple[str, ...]) -> Histogram:
            return Histogram(name, doc, names, buckets=_LATENCY_BUCKETS, registry=r)

        self.latency = seconds(
            "gateway_request_seconds",
            "Time from request to the last byte sent, by the gateway",
            ("endpoint", "provider", "mode"),
        )
        self.upstream_latency = seconds(
            "gateway_provider_seconds",
            "Time the provider took: to its full answer, or to a stream's first event",
            ("provider", "mode", "stream"),
        )
        self.first_event = seconds(
            "gateway_first_event_seconds",
            "Time from request to the first streamed byte sent to the client",
            ("provider", "mode"),
        )
        self.tokens = Counter(
            "gateway_tokens_total", "Tokens reported by providers", ("provider", "model", "direction"), registry=r
        )
        self.retries = Counter("gateway_retries_total", "Retries made", ("provider",), registry=r)
        self.omitted_tools = Counter(
            "gateway_omitted_tools_total",
            "Tools left out of a chat provider's request (hosted_tools = omit), by tool type",
            ("provider", "type"),
            registry=r,
        )
        self.truncated = Counter(
            "gateway_truncated_requests_total",
            'Requests whose oldest turns the gateway left out to fit the model\'s context window (truncation: "auto")',
            ("provider",),
            registry=r,
        )
        self.fallbacks = Counter("gateway_fallbacks_total", "Targets given up for the next one", registry=r)
        self.open_streams = Gauge(
            "gateway_open_streams", "Streams being sent right now", registry=r, multiprocess_mode="livesum"
        )
        self.cost = Counter(
            "gateway_cost_usd_total",
            "USD spent at providers (priced calls), by provider and model",
            ("provider", "model"),
            registry=r,
        )
        self.key_cost = Counter(
            "gateway_key_cost_usd_total", "USD spent at providers by callers of each gateway key", ("key",), registry=r
        )
        self.unpriced = Counter(
            "gateway_unpriced_total",
            "Charged calls whose model has no known price (cost unknown), by provider and model",
            ("provider", "model"),
            registry=r,
        )
        self.usage_lost = Counter(
            "gateway_usage_rows_lost_total",
            "Usage rows that could not be written (the store down for longer than the rows could wait)",
            registry=r,
        )
        self.limits_down = Counter(
            "gateway_limits_unavailable_total",
            "Limit checks made without the limits' counter (limits_fail: open lets them through, closed refuses)",
            registry=r,
        )
        self.store_latency = seconds("gateway_store_seconds", "Time a store operation took", ("operation",))
        self.store_errors = Counter(
            "gateway_store_errors_total",
            "Store operations that failed (after retries), by kind of failure",
            ("operation", "kind"),
            registry=r,
        )

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def store_op(self, operation: str, seconds: float, error: str | None) -> None:
        """The store's hook: every operation's latency, and its failures."""
        self._child(self.store_latency, operation).observe(seconds)
        if error is not None:
            self._child(self.store_errors, operation, error).inc()

    def charged(self, provider: str, model: str, key: str | None, cost: Decimal | None) -> None:
        """One charged call: its cost by provider and model, and by gateway key (configured names only, so a
        bounded label); a call of unknown price counted as such.
        """
        label = self.model_label(model)
        if cost is None:
            self._child(self.unpriced, provider, label).inc()
            return
        amount = float(cost)
        self._child(self.cost, provider, label).inc(amount)
        if key is not None:
            self._child(self.key_cost, key).inc(amount)

    def limits_unavailable(self) -> None:
        """The limits' hook: a check made while their counter could not be reached."""
        self.limits_down.inc()

    def rows_lost(self, count: int) -> None:
        """The usage store's hook: rows it could not keep."""
        self.usage_lost.inc(count)

    def _model_label(self, trace: Trace) -> str:
        # Unauthenticated and rejected requests name whatever model they like: they make no series.
        if trace.tenant is None or (400 <= trace.status < 500 and trace.status not in (408, 429)):
            return ""
        return self.model_label(trace.model)

    def model_label(self, model: Any) -> str:
        """``model`` as a label value: the first ``max_models`` names get their own, later ones "other"."""
        if not model or not isinstance(model, str):
            return ""
        if model in self._models:
            return model
        if len(model) > _MAX_LABEL or len(self._models) >= self._max_models or not model.isprintable():
            # (A NUL or other control character would go raw into the exposition a scraper parses.)
            return "other"
        self._models.add(model)
        return model

    def finish(self, trace: Trace) -> None:
        """Count and log a request once its last byte has gone (or the client went away)."""
        endpoint = trace.path
        provider, model, mode = trace.provider or "", self._model_label(trace), trace.mode or ""
        child = self._child
        child(self.requests, endpoint, provider, model, mode, str(trace.status)).inc()
        child(self.latency, endpoint, provider, mode).observe(time.perf_counter() - trace.started)
        if trace.upstream_ms is not None:
            child(self.upstream_latency, provider, mode, "true" if trace.stream else "false").observe(
                trace.upstream_ms / 1000
            )
        if trace.first_event_ms is not None:
            child(self.first_event, provider, mode).observe(trace.first_event_ms / 1000)
        if trace.input_tokens:
            child(self.tokens, provider, model, "in").inc(trace.input_tokens)
        if trace.output_tokens:
            child(self.tokens, provider, model, "out").inc(trace.output_tokens)
        if trace.retries:
            child(self.retries, provider).inc(trace.retries)
        if trace.fallbacks:
            self.fallbacks.inc(trace.fallbacks)
        if trace.omitted_tools:
            for kind in trace.omitted_tools.split(","):
                # Tool types are the caller's strings: the known ones are labels, any other is "other".
                child(self.omitted_tools, provider, kind if kind in _HOSTED_TOOLS else "other").inc()
        if trace.truncated_items:
            child(self.truncated, provider).inc()
        if access_log.isEnabledFor(logging.INFO):
            line = orjson.dumps(trace.as_log(), default=str).decode()
            handlers = access_log.handlers
            # The gateway's own handler takes the line as it is: a LogRecord, built only to give back its
            # message, reads the clock, the process id (a system call), the thread's name and the caller's
            # frame. Any other handler, or a filter, gets the record as before.
            if len(handlers) == 1 and not access_log.filters and (write := getattr(handlers[0], "write_line", None)):
                write(line)
            else:
                access_log.info(line)

    def exposition(self) -> bytes:
        """The Prometheus text: of every worker in multiprocess mode, else of this process."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)

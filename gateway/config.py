"""Settings, read once in layers: defaults < TOML file named by GATEWAY_CONFIG < GATEWAY_* env < mapping.

This is the only module that reads ``os.environ``; everything else receives plain values.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import re
import tempfile
import time
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from .limits import parse_policy

ENV_PREFIX = "GATEWAY_"
# The worker types the gateway is tested under; gunicorn's others (sync, eventlet…) would hold one
# request per process or are unmaintained.
WORKER_CLASSES = ("gevent", "gthread")


class SettingsError(ValueError):
    """A setting is unknown, or has a value of the wrong type or shape.

    ``key`` is the dotted path of the setting at fault (``providers.my-vllm.key_requird``), ``source`` the
    layer it came from when that is known at once (the settings file, for a file that cannot be read);
    ``explain()`` turns both into the one line an operator sees.
    """

    def __init__(self, message: str, key: str | None = None, source: str | None = None):
        super().__init__(f"{key}: {message}" if key else message)
        self.message = message
        self.key = key
        self.source = source


# The settings gunicorn's master checked last, for the workers it forks (see ``pin``).
_pinned: Settings | None = None


def pin(settings: Settings) -> None:
    """Make ``settings`` what an app built without a config of its own uses, in this process and the workers
    it forks: gunicorn's master pins the settings it checked, so that a settings file broken between a
    start and a reload (SIGHUP) is refused by the master, and the new workers go on with the last good one.
    """
    global _pinned
    _pinned = settings


def pinned() -> Settings | None:
    return _pinned


class SettingsErrors(SettingsError):
    """Every mistake found in one pass over the settings: ``errors``, each a SettingsError of its own."""

    def __init__(self, errors: list[SettingsError]):
        super().__init__(errors[0].message, errors[0].key, errors[0].source)
        self.errors = errors
        self.partial: Settings | None = None  # the settings without the values at fault, when known


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest of ``known``, or nothing when none is near."""
    near = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{near[0]}'?)" if near else ""


_AGE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` -> seconds. Raises ValueError for anything else."""
    match = _AGE.fullmatch(text or "")
    if not match:
        raise ValueError(f"not an age: {text!r} (use e.g. 30d, 12h, 90m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _checked(kwargs: dict[str, Any]) -> list[SettingsError]:
    """The checks of values whose type is right and whose form may not be."""
    errors = []
    if kwargs.get("worker_class", "gevent") not in WORKER_CLASSES:
        value = kwargs["worker_class"]
        errors.append(SettingsError(f"must be one of {', '.join(WORKER_CLASSES)}, not {value!r}", key="worker_class"))
    queue = kwargs.get("background_queue", "")
    if queue and not queue.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
        errors.append(
            SettingsError(
                f"must be empty, sqlite:///PATH or redis://HOST:PORT/DB, not {queue!r}", key="background_queue"
            )
        )
    for name in ("retention", "background_event_retention", "usage_retention"):
        if kwargs.get(name):
            try:
                parse_age(kwargs[name])
            except ValueError as exc:
                errors.append(SettingsError(str(exc), key=name))
    level = kwargs.get("log_level", "INFO")
    if level.upper() not in LOG_LEVELS:
        errors.append(
            SettingsError(
                f"must be one of {', '.join(LOG_LEVELS)}, not {level!r}{did_you_mean(level.upper(), LOG_LEVELS)}",
                key="log_level",
            )
        )
    if kwargs.get("hosted_tools", "omit") not in ("omit", "refuse"):
        errors.append(SettingsError(f"must be omit or refuse, not {kwargs['hosted_tools']!r}", key="hosted_tools"))
    admin_key = kwargs.get("admin_key", "")
    if admin_key and not re.fullmatch(r"sha256:[0-9a-fA-F]{64}", admin_key):
        errors.append(SettingsError('must be "sha256:<64 hex digits>", the digest of the admin key', key="admin_key"))
    for i, path in enumerate(kwargs.get("prompt_files", [])):
        if not isinstance(path, str) or not path:
            errors.append(SettingsError(f"must be a list of file paths, not {path!r}", key=f"prompt_files.{i}"))
    if kwargs.get("log_format", "text") not in LOG_FORMATS:
        errors.append(SettingsError(f"must be text or json, not {kwargs['log_format']!r}", key="log_format"))
    capacity_key = "threads" if kwargs.get("worker_class", "gevent") == "gthread" else "worker_connections"
    capacity = kwargs.get(capacity_key, 384 if capacity_key == "threads" else 1000)
    reserve = kwargs.get("websocket_reserve", -1)
    if isinstance(capacity, int) and isinstance(reserve, int) and reserve != -1 and not 0 <= reserve < capacity:
        message = f"must be -1 (a tenth), or from 0 to {capacity_key} - 1 ({capacity - 1}), not {reserve}"
        errors.append(SettingsError(message, key="websocket_reserve"))
    if kwargs.get("limits_fail", "open") not in ("open", "closed"):
        errors.append(SettingsError(f"must be open or closed, not {kwargs['limits_fail']!r}", key="limits_fail"))
    store = kwargs.get("limits_store", "")
    if store and not store.startswith(("redis://", "rediss://", "unix://")):
        errors.append(SettingsError(f"must be empty or redis://HOST:PORT/DB, not {store!r}", key="limits_store"))
    tables = kwargs.get("limits", {})
    for name, table in tables.items() if isinstance(tables, dict) else []:
        if name != "default":
            message = "only [limits.default]: a key's own go in [keys.NAME.limits]"
            errors.append(SettingsError(message, key=f"limits.{name}"))
            continue
        errors.extend(SettingsError(why, key=where) for where, why in parse_policy(table, "limits.default")[1])
    keys = kwargs.get("keys", {})
    for name, entry in keys.items() if isinstance(keys, dict) else []:
        if isinstance(entry, dict) and "limits" in entry:
            found = parse_policy(entry["limits"], f"keys.{name}.limits")[1]
            errors.extend(SettingsError(why, key=where) for where, why in found)
    hosts = kwargs.get("mcp_hosts", [])
    for entry in hosts if isinstance(hosts, list) else []:
        if not _host_entry(entry):
            message = f"each must be a host name, *.domain, an address or a network, not {entry!r}"
            errors.append(SettingsError(message, key="mcp_hosts"))
    errors += price_errors(kwargs.get("prices", {}))
    bind = kwargs.get("bind", "127.0.0.1:8787")
    if not (bind.startswith("unix:") or re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*):\d{1,5}", bind)):
        errors.append(SettingsError(f"must be HOST:PORT, [IPv6]:PORT or unix:PATH, not {bind!r}", key="bind"))
    return errors


# The keys of a ``[prices."PROVIDER/MODEL"]`` table, USD per million tokens; input and output are required.
PRICE_KEYS = ("input", "cached_input", "cache_write", "output", "reasoning")


def price_errors(prices: Any) -> list[SettingsError]:
    """The mistakes in ``prices``: each entry ``"PROVIDER/MODEL"`` (a glob for the model may stand), a table of
    non-negative numbers under PRICE_KEYS, ``input`` and ``output`` among them. The entry is named in the
    message: a model's dots would read as tables in the key.
    """
    errors: list[SettingsError] = []
    for name, entry in prices.items():
        provider, _, model = str(name).partition("/")
        if not provider or not model:
            errors.append(SettingsError(f'{name!r}: name each entry "PROVIDER/MODEL"', key="prices"))
            continue
        if not isinstance(entry, dict):
            errors.append(SettingsError(f"{name!r}: must be a table of USD per million tokens", key="prices"))
            continue
        for key, value in entry.items():
            if key not in PRICE_KEYS:
                hint = did_you_mean(key, PRICE_KEYS)
                message = f"{name!r}: unknown key {key!r}{hint} (known keys: {', '.join(PRICE_KEYS)})"
                errors.append(SettingsError(message, key="prices"))
            elif isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                message = f"{name!r}: {key} must be a number of USD per million tokens, 0 or more, not {value!r}"
                errors.append(SettingsError(message, key="prices"))
        missing = [key for key in ("input", "output") if key not in entry]
        if missing:
            message = f"{name!r}: give {' and '.join(missing)} (USD per million tokens)"
            errors.append(SettingsError(message, key="prices"))
    return errors


def _host_entry(entry: Any) -> bool:
    if not isinstance(entry, str) or not entry.strip():
        return False
    try:
        ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return re.fullmatch(r"(\*\.)?[A-Za-z0-9_.-]+", entry) is not None
    return True


def _setting(default: Any, doc: str) -> Any:
    if isinstance(default, dict | list):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting of the gateway, with its default. The README's table is generated from these docs."""

    bind: str = _setting("127.0.0.1:8787", "gunicorn listen address (`--bind` on the command line wins)")
    workers: int = _setting(0, "gunicorn worker processes; 0: one per core plus one")
    worker_class: str = _setting("gevent", "gunicorn worker type: `gevent` (greenlets) or `gthread` (threads)")
    worker_connections: int = _setting(1000, "requests in flight per gevent worker; each open stream holds one")
    threads: int = _setting(384, "threads per gthread worker; each open stream holds one")
    control_socket: str = _setting(
        "",
        "gunicorn's control socket (for `gunicornc`); empty: one per instance, `gateway-<master pid>.ctl` in "
        "`$XDG_RUNTIME_DIR` or the temp directory; `off`: none",
    )
    worker_timeout: int = _setting(60, "gunicorn worker heartbeat timeout, seconds")
    graceful_timeout: int = _setting(30, "seconds open requests and streams get to finish on SIGTERM")
    max_body_bytes: int = _setting(16 * 1024 * 1024, "largest request body accepted (413 above it)")
    allow_provider_keys: bool = _setting(
        True, "accept a caller's own provider key and forward it upstream (else only gateway keys)"
    )
    key_salt: str = _setting(
        "", "secret salt for tenant digests of provider keys; empty: generated once and kept in the store"
    )
    upstream_connect_timeout: float = _setting(5.0, "seconds to connect to a provider")
    upstream_read_timeout: float = _setting(600.0, "seconds a provider may stay silent (per read, also mid-stream)")
    upstream_pool_size: int = _setting(
        4, "keep-alive connections per provider host in each gthread thread's pool (gevent: `worker_connections`)"
    )
    upstream_trust_env: bool = _setting(False, "honour HTTP(S)_PROXY and netrc from the environment")
    store_url: str = _setting("sqlite:///gateway.sqlite3", "SQLAlchemy URL of the response store")
    store_write_timeout: float = _setting(
        5.0,
        "seconds a store write is retried (and any store wait is bounded) before the caller gets 503 "
        "`store_unavailable`; nothing is acknowledged that the store does not hold",
    )
    retention: str = _setting("", "default age for `gateway purge` (e.g. `30d`, `12h`); empty: keep forever")
    log_level: str = _setting("INFO", "log level of the `gateway` logger")
    log_format: str = _setting(
        "text",
        "stderr's lines besides the access log (always JSON): `text`, or `json` for one JSON object a line, "
        "gunicorn's own lines included",
    )
    log_prompts: bool = _setting(False, "put each request's `input` and `instructions` in its access log line")
    console_show_content: bool = _setting(
        False,
        "let the console (`/console`, on when `admin_key` is set) show the input and output of stored responses, "
        "conversations and background runs; off, it shows their usage, cost, timing and item types only",
    )
    metrics_token: str = _setting(
        "", "when set, `/metrics` asks for `Authorization: Bearer <token>` (for gateways exposed without nginx)"
    )
    metrics_max_models: int = _setting(
        100, "distinct `model` label values per worker in metrics; later ones are counted as `other`"
    )
    stream_heartbeat_interval: float = _setting(
        15.0,
        "seconds of provider silence after which a stream sends an SSE comment (`: keep-alive`), so a client "
        "that left is noticed and the provider call closed; 0: never",
    )
    websocket_idle_timeout: float = _setting(
        300.0, "seconds a WebSocket on /v1/responses may wait for its next frame before it is closed; 0: never"
    )
    websocket_max_per_key: int = _setting(
        100, "WebSockets one key (or provider-key tenant) may hold open on one worker; more are refused (429)"
    )
    websocket_reserve: int = _setting(
        -1,
        "connections of each worker (`worker_connections`, or `threads` under gthread) never given to WebSockets, "
        "so plain requests always find room; past the rest, a WebSocket is refused (503); -1: a tenth of them",
    )
    background_queue: str = _setting(
        "",
        "task queue of background runs: empty: a SQLite file beside a SQLite store (`<store>-queue.sqlite3`), "
        "else `gateway-queue.sqlite3` in the working directory; `sqlite:///PATH`; `redis://HOST:PORT/DB` when "
        "several hosts share the work",
    )
    background_consumers: int = _setting(
        1, "background consumer processes `gateway serve` starts and restarts; 0: none (run `gateway worker`)"
    )
    background_concurrency: int = _setting(100, "background runs one consumer process holds at once (greenlets)")
    background_max_per_tenant: int = _setting(
        20, "queued and running background responses a tenant may have at once (429 past it); 0: no limit"
    )
    background_max_unproven: int = _setting(
        10,
        "queued and running background responses that keys with no completed response yet (callers' own "
        "provider keys: anyone with a made-up key) may have between them; 0: no limit",
    )
    background_lease_timeout: float = _setting(
        10.0, "seconds without a heartbeat from its consumer after which a running background response ends `failed`"
    )
    background_queued_timeout: float = _setting(
        300.0,
        "seconds a background response may wait queued: then it is queued again, once, and after as long again "
        "it ends `failed` (`server_error`); 0: never",
    )
    background_event_retention: str = _setting(
        "7d", "how long the events of a finished background response are kept for replay (`gateway purge`)"
    )
    hosted_tools: str = _setting(
        "omit",
        "tools a provider without a Responses API cannot run (web_search, file_search, code_interpreter…): "
        "`omit` leaves them out of its request, named in the `x-gateway-omitted-tools` header; `refuse` is a "
        "400 (per provider: `providers.NAME.hosted_tools`)",
    )
    gateway_key_prefix: str = _setting(
        "",
        "keys starting with this prefix are gateway keys only: one that matches none is 401 and is never "
        "forwarded to a provider (e.g. `gw-`); empty: no such rule",
    )
    metrics_dir: str = _setting(
        "", "directory for multi-process metrics; gunicorn.conf.py makes one (PROMETHEUS_MULTIPROC_DIR is read too)"
    )
    configs: dict = _setting(
        {}, "`[configs.NAME]` routing configs a caller may name in `x-portkey-config` instead of sending JSON"
    )
    custom_hosts: list = _setting(
        [], "base URLs a caller may name in `x-portkey-custom-host` or a config's `custom_host` (none by default)"
    )
    mcp_hosts: list = _setting(
        [],
        "hosts of the remote MCP servers the gateway may call for `mcp` tools it runs itself: names "
        "(`mcp.example.com`), wildcards (`*.example.com`), addresses or networks (`10.0.0.0/8`, for servers named "
        "by address, and for a listed name that resolves to a private or loopback one); empty: none",
    )
    mcp_timeout: float = _setting(30.0, "seconds an MCP server may take to answer one message (a listing, a call)")
    mcp_max_result_bytes: int = _setting(
        1048576, "the most bytes one answer of an MCP server may hold; a larger call result ends as an error"
    )
    mcp_max_calls: int = _setting(
        20, "the most MCP tool calls the gateway runs for one response (a request's `max_tool_calls` may lower it)"
    )
    retry_backoff_base: float = _setting(0.5, "first retry waits up to this many seconds (full jitter), doubling")
    retry_backoff_cap: float = _setting(8.0, "longest wait between retries, seconds")
    retry_after_max: float = _setting(
        30.0, "longest provider Retry-After the gateway waits out; a longer one ends the retries"
    )
    providers: dict = _setting(
        {}, "`[providers.NAME]` tables: add a provider or override a built-in one (`base_url`, `api`, `auth`…)"
    )
    keys: dict = _setting(
        {}, '`[keys.NAME]` gateway keys: `digest = "sha256:<hex>"` and `[keys.NAME.providers.P] api_key = …`'
    )
    admin_key: str = _setting(
        "",
        'digest (`"sha256:<hex>"`, as gateway keys are written) of the operator\'s admin key, which the '
        "`/v1/gateway/` endpoints (prompt templates, the usage report) and the console (`/console`) ask for; empty: "
        "those endpoints answer 404",
    )
    prices: dict = _setting(
        {},
        '`[prices."PROVIDER/MODEL"]` tables, USD per million tokens: `input`, `output`, and optionally '
        "`cached_input`, `cache_write` (else input's price) and `reasoning` (else output's); they win over the "
        "bundled prices of genai-prices (a glob may stand for the model: `my-vllm/*`)",
    )
    usage_retention: str = _setting(
        "400d", "how long the `usage` table's rows (one per charged call) are kept (`gateway purge`); empty: forever"
    )
    limits: dict = _setting(
        {},
        "`[limits.default]`: the limits of every caller without limits of its own (callers' own provider keys, "
        "gateway keys without `[keys.NAME.limits]`): `requests_per_minute`, `tokens_per_minute`, `usd_per_day`, "
        "`usd_per_month`, `models`",
    )
    limits_store: str = _setting(
        "",
        "where the minute windows of the limits are counted across hosts: `redis://HOST:PORT/DB`; empty: the "
        "gateway's store",
    )
    limits_fail: str = _setting(
        "open",
        "when the limits' counter cannot be reached: `open` lets requests through (logged once, counted, in "
        "`/readyz`), `closed` refuses them (503 `limits_unavailable`)",
    )
    prompt_files: list = _setting(
        [],
        "TOML or JSON files of prompt templates (`[[prompts]]` with `id`, `version`, `instructions`, `input`, "
        "`variables`), read at start-up (and on SIGHUP); paths relative to the working directory",
    )

    @classmethod
    def load(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from every layer.

        Raises SettingsError for an unknown setting or a value of the wrong type.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        path = environ.get(ENV_PREFIX + "CONFIG")
        if path:
            _merge(values, _read_file(path))
        if environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # prometheus_client itself is configured by this variable, so the gateway follows it.
            values["metrics_dir"] = environ["PROMETHEUS_MULTIPROC_DIR"]
        _merge(values, _from_env(environ))
        if overrides:
            _merge(values, dict(overrides))
        return cls._build(values)

    @classmethod
    def _build(cls, values: dict[str, Any]) -> Settings:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        errors: list[SettingsError] = []
        kwargs = {}
        for name in sorted(values):
            if name not in fields:
                hint = did_you_mean(name, fields)
                errors.append(
                    SettingsError(f"unknown setting{hint} (the README's settings table lists them all)", key=name)
                )
                continue
            try:
                kwargs[name] = _coerce(name, values[name], fields[name].type)
            except SettingsError as err:
                errors.append(err)
        errors += _checked(kwargs)
        if errors:
            found = SettingsErrors(errors)
            # What was right, so that the checks of what the settings name go on in the same pass.
            found.partial = cls(**kwargs)
            raise found
        return cls(**kwargs)

    def masked(self) -> dict[str, Any]:
        """Every setting's value, secrets replaced by ``"***"`` (for ``gateway check-config``)."""
        return {f.name: _mask(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def documented(cls) -> list[tuple[str, Any, str]]:
        """(name, default, doc) for every setting, for the README."""
        out = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append((f.name, default, f.metadata["doc"]))
        return out


def explain_all(err: SettingsError, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per mistake (see ``explain``)."""
    return [explain(e, environ) for e in getattr(err, "errors", None) or [err]]


def explain(err: SettingsError, environ: Mapping[str, str] | None = None) -> str:
    """One line for a settings error: where the value came from (file, table, key, or environment variable)."""
    environ = os.environ if environ is None else environ
    key = err.key.split(".") if err.key else []
    source = err.source or _origin(key, environ)
    if source.startswith(ENV_PREFIX):
        return f"{source}: {err.message}"  # the variable's name already says the table and the key
    if len(key) > 1:
        return f"{source}: [{'.'.join(key[:-1])}] {key[-1]}: {err.message}"
    if key:
        return f"{source}: {key[0]}: {err.message}"
    return f"{source}: {err.message}"


def _origin(key: list[str], environ: Mapping[str, str]) -> str:
    """The layer that set ``key`` last: an environment variable's name, the settings file's path, or neither."""
    for name in sorted(environ, reverse=True):
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG" and key:
            path = _env_path(name)
            if path == key[: len(path)]:
                return name
    path = environ.get(ENV_PREFIX + "CONFIG")
    if path and key and key[0] in _read_file(path):
        return path
    return "settings"


def _read_file(path: str) -> dict[str, Any]:
    """The TOML file named by GATEWAY_CONFIG. Raises SettingsError when it cannot be read or parsed."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(
            f"cannot read the settings file named by GATEWAY_CONFIG: {exc.strerror}", source=path
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"not valid TOML: {exc}", source=path) from None


# Digests are not keys, but a short key could be found from its digest: they are masked too.
_SECRETS = frozenset({"key_salt", "metrics_token", "api_key", "admin_key", "digest"})


def _mask(name: str, value: Any) -> Any:
    if name in _SECRETS and value:
        return "***"
    if isinstance(value, str) and "://" in value:
        return _mask_url(value)
    if name in ("headers", "query") and isinstance(value, dict):
        # A provider's extra headers and query parameters often carry its credentials (api-key, key=...).
        return {k: "***" for k in value}
    if isinstance(value, dict):
        return {k: _mask(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(name, v) for v in value]
    return value


# Query parameters that carry credentials in URLs (libpq's password=, Redis's password=, key=, token=, sig=...).
_URL_SECRET = re.compile(
    r"(?i)([?&](?:password|passwd|pwd|key|api[-_]?key|access[-_]?token|token|secret|sig|signature)=)[^&#]*"
)


def _mask_url(url: str) -> str:
    """Any URL with its credentials masked: ``user:password@`` -> ``user:***@`` (a password may hold ``/``:
    the last ``@`` before the query ends it), a user alone (often a token) -> ``***@``, and credential-like
    query parameters -> ``name=***``.
    """
    scheme, sep, rest = url.partition("://")
    head = re.split(r"[?#]", rest, maxsplit=1)[0]
    at = head.rfind("@")
    if at >= 0:
        user, colon, _ = head[:at].partition(":")
        rest = (f"{user}:***" if colon else "***") + rest[at:]
    return scheme + sep + _URL_SECRET.sub(r"\1***", rest)


def runtime_path(name: str) -> str:
    """A per-user runtime file's path: in ``$XDG_RUNTIME_DIR`` where there is one, else the temp directory."""
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), name)


def mark_reload(master_pid: int) -> None:
    """The master is reloading (SIGHUP): said to its old workers, which it stops next (see ``reloading``)."""
    with open(runtime_path(f"gateway-{master_pid}.reload"), "w") as marker:
        marker.write(str(time.time()))


def reloading(master_pid: int, within: float = 120.0) -> bool:
    """Whether the master ``master_pid`` began a reload in the last ``within`` seconds."""
    try:
        return time.time() - os.path.getmtime(runtime_path(f"gateway-{master_pid}.reload")) < within
    except OSError:
        return False


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Deep-merge ``new`` into ``into``: tables merge key by key, other values replace."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, Mapping):
            into[key] = {}
            _merge(into[key], value)
        else:
            into[key] = value


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """GATEWAY_X=1 sets ``x``; GATEWAY_PROVIDERS__OPENAI__BASE_URL=… sets a nested key, as Flask does.

    Values are parsed as JSON where they parse, else kept as strings. Provider and key names may hold
    dashes in TOML (``azure-openai``) but not in environment names, so ``_`` there means ``-``.
    """
    out: dict[str, Any] = {}
    for key in sorted(environ):
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        path = _env_path(key)
        try:
            value: Any = json.loads(environ[key])
        except ValueError:
            value = environ[key]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _env_path(name: str) -> list[str]:
    """GATEWAY_PROVIDERS__MY_VLLM__BASE_URL -> ["providers", "my-vllm", "base_url"]."""
    path = name[len(ENV_PREFIX) :].lower().split("__")
    if len(path) > 1 and path[0] in ("providers", "keys"):
        path[1] = path[1].replace("_", "-")
    return path


def _coerce(name: str, value: Any, kind: str) -> Any:
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise SettingsError(f"must be true or false, not {value!r}", key=name)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise SettingsError(f"must be an integer, not {value!r}", key=name)
        try:
            return int(value)
        except ValueError:
            raise SettingsError(f"must be an integer, not {value!r}", key=name) from None
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise SettingsError(f"must be a number, not {value!r}", key=name)
        try:
            return float(value)
        except ValueError:
            raise SettingsError(f"must be a number, not {value!r}", key=name) from None
    if kind == "list":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise SettingsError(f"must be a list, not {value!r}", key=name)
        return value
    if kind == "dict":
        if not isinstance(value, dict):
            raise SettingsError(f"must be a table, not {value!r}", key=name)
        return value
    if isinstance(value, bool | dict | list):
        raise SettingsError(f"must be a string, not {value!r}", key=name)
    if not isinstance(value, str):
        return str(value)  # GATEWAY_KEY_SALT=1234 parses as JSON, and is still meant as text
    return value

"""The provider catalogue as data: built-in entries from catalogue.toml, merged with the settings' tables."""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import tomllib
from importlib import resources
from typing import Any

from ..config import SettingsError, did_you_mean

API_KINDS = ("responses", "chat")
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class CatalogueError(SettingsError):
    """A provider entry is incomplete or malformed (a configuration mistake, found at start-up)."""


@dataclasses.dataclass(frozen=True)
class Provider:
    """One provider: where it lives, which API it speaks and how it takes a key."""

    name: str
    base_url: str
    api: str
    auth_header: str = "Authorization"
    auth_prefix: str = "Bearer "
    key_required: bool = True
    query: dict[str, str] = dataclasses.field(default_factory=dict)
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    # Chat providers: the parameter that caps output tokens (max_tokens is the one nearly all accept).
    max_tokens_param: str = "max_tokens"
    # A key the operator configured for this provider, used for gateway-key callers without their own.
    api_key: str | None = dataclasses.field(default=None, repr=False)
    # Native providers: the Responses endpoints they have beyond create, passed through to them; for the
    # others the gateway compacts (over Chat Completions) and counts tokens itself.
    compact: bool = False
    input_tokens: bool = False
    # Native providers that keep prompt templates of their own: a create's ``prompt`` whose id the gateway does
    # not hold is passed on to them (any other provider: 400 prompt_not_found).
    stored_prompts: bool = False
    # A token-counting endpoint of the provider's own API: its request shape ("anthropic", "gemini") and URL
    # (``{model}`` is filled in). Used for POST /v1/responses/input_tokens where the provider has no such
    # Responses endpoint.
    count_tokens: str | None = None
    count_tokens_url: str | None = None
    # Emulated providers: tools the platform runs itself (web_search, file_search…), left out ("omit") or
    # refused ("refuse"); None: the gateway's hosted_tools setting.
    hosted_tools: str | None = None
    # Chat providers: the Responses fields their Chat Completions API takes (reasoning.effort, user,
    # prompt_cache_key…: catalogue.toml lists them). Fields of the Responses API not listed stay in the gateway.
    chat_fields: tuple[str, ...] = ()
    # Chat providers that take reasoning back: the assistant message's field for it ("reasoning_content");
    # None: reasoning items in the input are left out of the chat request.
    reasoning_field: str | None = None
    # Native providers that run remote MCP tools themselves (``mcp`` tools pass through); for the others the
    # gateway runs them.
    runs_mcp: bool = False
    # Model name, or glob ("llama-3.1-*"), -> the model's context window in tokens, for ``truncation: "auto"``
    # where the gateway sends the history itself. A model it does not name has no known window.
    context_window: dict[str, int] = dataclasses.field(default_factory=dict)
    # Why the entry cannot be used yet (an unfilled placeholder); None when usable.
    unconfigured: str | None = None

    @property
    def native(self) -> bool:
        return self.api == "responses"

    def window(self, model: str) -> int | None:
        """The context window ``context_window`` gives ``model``: its own entry, else the longest glob that
        matches it (``"llama-3.1-*"`` before ``"*"``); None when no entry names it.
        """
        windows = self.context_window
        if model in windows:
            return windows[model]
        matching = [p for p in windows if fnmatch.fnmatchcase(model, p)]
        return windows[max(matching, key=len)] if matching else None

    def url(self, path: str) -> str:
        return self.base_url + path

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = dict(self.headers)
        if api_key:
            headers[self.auth_header] = self.auth_prefix + api_key
        return headers


_TYPES = {
    "str": str,
    "bool": bool,
    "dict": dict,
    "str | None": str,
    "dict[str, str]": dict,
    "tuple[str, ...]": list,
}
# URL schemes a base_url may have: mock:// is the built-in mock model, answered in-process (gateway/mock.py).
_SCHEMES = ("http://", "https://", "mock://")


def _build(name: str, entry: dict[str, Any]) -> Provider:
    """One entry -> a Provider. Raises CatalogueError naming the key at fault (``providers.NAME.KEY``)."""
    fields = {f.name: f.type for f in dataclasses.fields(Provider) if f.name not in ("name", "unconfigured")}
    base = entry.get("base_url")
    placeholders = set(_PLACEHOLDER.findall(base)) if isinstance(base, str) else set()
    # A key is a field, or fills a placeholder of the base_url (azure-openai's `resource`); anything else
    # is a typo that would otherwise be ignored (`key_requird = false`).
    for key in entry:
        if key not in fields and key not in placeholders:
            names = sorted({*fields, *placeholders})
            hint = did_you_mean(key, names)
            raise CatalogueError(f"unknown key{hint} (known keys: {', '.join(names)})", key=f"providers.{name}.{key}")
    known = {k: v for k, v in entry.items() if k in fields}
    extra = {k: v for k, v in entry.items() if k not in fields}
    for required in ("base_url", "api"):
        if not isinstance(known.get(required), str) or not known[required]:
            raise CatalogueError("must be a non-empty string", key=f"providers.{name}.{required}")
    for key, value in known.items():
        if fields[key] == "dict[str, int]":
            _check_windows(name, key, value)
            continue
        kind = _TYPES[fields[key]]
        strings = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        if not isinstance(value, kind) or not all(isinstance(v, str) for v in strings):
            what = {str: "a string", bool: "true or false", dict: "a table of strings", list: "a list of strings"}[kind]
            raise CatalogueError(f"must be {what}, not {value!r}", key=f"providers.{name}.{key}")
        if kind is list:
            known[key] = tuple(value)
    if known.get("hosted_tools") not in (None, "omit", "refuse"):
        raise CatalogueError(
            f"must be omit or refuse, not {known['hosted_tools']!r}", key=f"providers.{name}.hosted_tools"
        )
    if known["api"] not in API_KINDS:
        raise CatalogueError(
            f"api must be one of {', '.join(API_KINDS)}, not {known['api']!r}", key=f"providers.{name}.api"
        )
    base_url = known["base_url"].rstrip("/")
    missing = [p for p in _PLACEHOLDER.findall(base_url) if not isinstance(extra.get(p), str)]
    unconfigured = None
    if missing:
        unconfigured = (
            f"Provider '{name}' is not configured: set "
            + ", ".join(f"providers.{name}.{p}" for p in missing)
            + " in the gateway settings."
        )
    else:
        base_url = _PLACEHOLDER.sub(lambda m: extra[m.group(1)], base_url)
    if not base_url.startswith(_SCHEMES):
        raise CatalogueError(f"must be an http(s) URL, not {base_url!r}", key=f"providers.{name}.base_url")
    known["base_url"] = base_url
    return Provider(name=name, unconfigured=unconfigured, **known)


def _check_windows(name: str, key: str, value: Any) -> None:
    """A table of model names (or globs) to positive token counts; raises CatalogueError naming the entry."""
    if not isinstance(value, dict):
        raise CatalogueError(
            f'must be a table of model names (or globs) to token counts, e.g. {{ "*" = 32768 }}, not {value!r}',
            key=f"providers.{name}.{key}",
        )
    for model, tokens in value.items():
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
            # Named in the message: a model's dots ("llama-3.1-8b") would read as tables in the key.
            raise CatalogueError(
                f"{model!r} must be a positive number of tokens, not {tokens!r}", key=f"providers.{name}.{key}"
            )


class Catalogue:
    """Every known provider by name."""

    def __init__(self, overrides: dict[str, Any] | None = None, *, hosted_tools: str = "omit"):
        raw = tomllib.loads(resources.files(__package__).joinpath("catalogue.toml").read_text("utf-8"))
        for name, entry in (overrides or {}).items():
            if not isinstance(entry, dict):
                raise CatalogueError("must be a table", key=f"providers.{name}")
            raw[name] = {**raw.get(name, {}), **entry}
        built = (_build(name, entry) for name, entry in raw.items())
        # A provider's own hosted_tools, else the gateway's setting.
        self._providers = {
            p.name: p if p.hosted_tools else dataclasses.replace(p, hosted_tools=hosted_tools) for p in built
        }

    def get(self, name: str) -> Provider | None:
        return self._providers.get(name)

    def names(self) -> list[str]:
        return sorted(self._providers)

"""Request headers (x-portkey-provider, x-portkey-config, x-portkey-custom-host) -> the ordered targets to try."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any

import orjson

from .auth import Caller
from .errors import GatewayError, InvalidRequest
from .providers import Catalogue, Provider
from .schemas import MAX_CONFIG_DEPTH, check_depth, validate
from .schemas.config import ConfigSchema

DEFAULT_RETRY_ON = frozenset({429, 500, 502, 503, 504})
_config_schema = ConfigSchema()


@dataclasses.dataclass(frozen=True)
class Target:
    """One provider to call, the key to call it with, and the policy for calling it."""

    provider: Provider
    api_key: str | None = dataclasses.field(repr=False)
    index: int = 0  # position among the config's top-level targets: x-portkey-last-used-option-index
    override_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    attempts: int = 0  # retries after the first call
    retry_on: frozenset[int] = DEFAULT_RETRY_ON
    timeout: float | None = None  # seconds: the config's request_timeout
    fallback_on: frozenset[int] | None = None  # statuses that move on to the next target; None: any error

    def falls_back_on(self, status: int) -> bool:
        return status >= 400 and (self.fallback_on is None or status in self.fallback_on)


def provider_named(catalogue: Catalogue, name: str) -> Provider:
    """Raises InvalidRequest listing the known providers when ``name`` is not one of them."""
    provider = catalogue.get(name)
    if provider is None:
        raise InvalidRequest(
            f"Unknown provider '{name}'. Known providers: {', '.join(catalogue.names())}.",
            param="x-portkey-provider",
            code="unknown_provider",
        )
    if provider.unconfigured:
        raise InvalidRequest(provider.unconfigured, param="x-portkey-provider", code="provider_not_configured")
    return provider


def target_for(provider: Provider, caller: Caller, api_key: str | None = None, **policy: Any) -> Target:
    """The credentials ``caller`` (or a key the config gives) uses for ``provider``.

    Raises GatewayError (403) when a gateway key has no credentials for a provider that needs a key.
    """
    if api_key is None:
        api_key = caller.provider_key
    if api_key is None:
        api_key = caller.credentials.get(provider.name) or provider.api_key
    if api_key is None and provider.key_required:
        raise GatewayError(
            f"This gateway key has no credentials for provider '{provider.name}'.",
            status=403,
            param="x-portkey-provider",
            code="provider_not_allowed",
        )
    return Target(provider, api_key, **policy)


class Router:
    """Turns routing headers into targets, with the operator's configs and custom-host allow-list."""

    def __init__(
        self,
        catalogue: Catalogue,
        *,
        configs: Mapping[str, Any],
        custom_hosts: list[str],
        rng: random.Random | None = None,
    ):
        self.catalogue = catalogue
        self.configs = dict(configs)
        self.custom_hosts = [h.rstrip("/") for h in custom_hosts]
        self._rng = rng or random.Random()
        # Saved configs are checked once, at start-up, so a typo fails the deploy and not a request.
        for name, config in self.configs.items():
            self._validated(config, f"configs.{name}")

    def targets(self, headers: Mapping[str, str], caller: Caller) -> list[Target]:
        """The targets to try, in order. Raises InvalidRequest for a bad header or config."""
        default_provider = headers.get("x-portkey-provider", "").strip() or None
        custom_host = headers.get("x-portkey-custom-host", "").strip() or None
        raw = headers.get("x-portkey-config", "").strip()
        config = self._config(raw) if raw else {}
        if custom_host and "custom_host" not in config and "targets" not in config:
            config = {**config, "custom_host": custom_host}
        out = self._expand(config, caller, default_provider, index=None, inherited={})
        return out

    # ------------------------------------------------------------------ config
    def _config(self, raw: str) -> dict:
        if raw.startswith("{"):
            try:
                config = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise InvalidRequest(
                    "x-portkey-config is not valid JSON.", param="x-portkey-config", code="invalid_config"
                ) from None
            return self._validated(config, "x-portkey-config")
        if raw not in self.configs:
            raise InvalidRequest(
                f"Unknown config '{raw[:64]}': send a JSON config or the name of one saved in the gateway settings.",
                param="x-portkey-config",
                code="invalid_config",
            )
        return self.configs[raw]

    def _validated(self, config: Any, where: str) -> dict:
        if not isinstance(config, dict):
            raise InvalidRequest(f"{where} must be a JSON object.", param=where, code="invalid_config")
        # Before the schema, which recurses once per nested target and would exhaust Python's stack.
        try:
            check_depth(config, None, MAX_CONFIG_DEPTH, where)
        except InvalidRequest as err:
            raise InvalidRequest(err.message, param=err.param, code="invalid_config") from None
        try:
            validate(_config_schema, config)
        except InvalidRequest as err:
            param = f"{where}.{err.param}" if err.param else where
            raise InvalidRequest(
                err.message.replace(f"'{err.param}'", f"'{param}'"), param=param, code="invalid_config"
            ) from None
        return config

    def _expand(
        self, node: dict, caller: Caller, default_provider: str | None, index: int | None, inherited: dict
    ) -> list[Target]:
        policy = dict(inherited)
        if "retry" in node:
            policy["attempts"] = node["retry"].get("attempts", 0)
            if "on_status_codes" in node["retry"]:
                policy["retry_on"] = frozenset(node["retry"]["on_status_codes"])
        if "request_timeout" in node:
            policy["timeout"] = node["request_timeout"] / 1000
        if node.get("override_params"):
            policy["override_params"] = {**policy.get("override_params", {}), **node["override_params"]}
        if "api_key" in node:
            policy["api_key"] = node["api_key"]

        children = node.get("targets")
        if not children:
            return [self._leaf(node, caller, default_provider, index or 0, policy)]
        strategy = node["strategy"]
        mode = strategy["mode"]
        pick = [(i, t) for i, t in enumerate(children)]
        if mode == "single":
            pick = pick[:1]
        elif mode == "loadbalance":
            weights = [t.get("weight", 1) for t in children]
            if not any(weights):
                raise InvalidRequest(
                    "loadbalance needs at least one target with a weight above 0.",
                    param="x-portkey-config.targets",
                    code="invalid_config",
                )
            pick = [self._rng.choices(pick, weights=weights)[0]]
        else:
            on = strategy.get("on_status_codes")
            policy["fallback_on"] = frozenset(on) if on else None
        out: list[Target] = []
        for i, child in pick:
            out += self._expand(child, caller, default_provider, i if index is None else index, policy)
        return out

    def _leaf(self, node: dict, caller: Caller, default_provider: str | None, index: int, policy: dict) -> Target:
        name = node.get("provider") or default_provider
        if not name:
            raise InvalidRequest(
                "Missing the x-portkey-provider header that names the provider to route to.",
                param="x-portkey-provider",
                code="missing_required_parameter",
            )
        provider = provider_named(self.catalogue, name)
        if node.get("custom_host"):
            provider = dataclasses.replace(provider, base_url=self._allowed_host(node["custom_host"]))
        api_key = policy.pop("api_key", None)
        return target_for(provider, caller, api_key, index=index, **policy)

    def _allowed_host(self, host: str) -> str:
        host = host.rstrip("/")
        if host not in self.custom_hosts:
            # Upstream URLs come from the operator: a caller may only pick among the hosts allowed.
            raise InvalidRequest(
                "This custom host is not allowed by the gateway's custom_hosts setting.",
                param="x-portkey-custom-host",
                code="custom_host_not_allowed",
            )
        return host


def mark(headers: dict[str, str], target: Target, retries: int) -> None:
    """Say in the response's headers which target answered, and after how many retries."""
    headers["x-portkey-provider"] = target.provider.name
    headers["x-portkey-last-used-option-index"] = str(target.index)
    headers["x-portkey-retry-attempt-count"] = str(retries)

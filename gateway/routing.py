"""Request headers -> the ordered targets to try: provider, credentials, policy."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from .auth import Caller
from .errors import GatewayError, InvalidRequest
from .providers import Catalogue, Provider


@dataclasses.dataclass(frozen=True)
class Target:
    """One provider to call and the key to call it with."""

    provider: Provider
    api_key: str | None = dataclasses.field(repr=False)


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


def target_for(provider: Provider, caller: Caller) -> Target:
    """The credentials ``caller`` uses for ``provider``.

    Raises GatewayError (403) when a gateway key has no credentials for a provider that needs a key.
    """
    if caller.provider_key is not None:
        return Target(provider, caller.provider_key)
    api_key = caller.credentials.get(provider.name) or provider.api_key
    if api_key is None and provider.key_required:
        raise GatewayError(
            f"This gateway key has no credentials for provider '{provider.name}'.",
            status=403,
            param="x-portkey-provider",
            code="provider_not_allowed",
        )
    return Target(provider, api_key)


def targets(headers: Mapping[str, str], caller: Caller, catalogue: Catalogue) -> list[Target]:
    """The targets named by the request's routing headers, in the order to try them."""
    name = headers.get("x-portkey-provider", "").strip()
    if not name:
        raise InvalidRequest(
            "Missing the x-portkey-provider header that names the provider to route to.",
            param="x-portkey-provider",
            code="missing_required_parameter",
        )
    return [target_for(provider_named(catalogue, name), caller)]

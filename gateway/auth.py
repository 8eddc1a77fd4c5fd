"""Caller keys -> Caller: which tenant is asking and with which provider credentials. Keys are never kept in clear."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from .config import SettingsError
from .errors import AuthenticationError


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who is calling. ``provider_key`` is set only when the caller brought a provider's own key."""

    tenant: str
    provider_key: str | None = dataclasses.field(default=None, repr=False)
    gateway_key: str | None = None
    credentials: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)


@dataclasses.dataclass(frozen=True)
class _GatewayKey:
    name: str
    digest: bytes
    credentials: dict[str, str]


def key_digest(key: str) -> str:
    """The form in which gateway keys are written in the settings: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class Authenticator:
    """Turns the request's key into a Caller."""

    def __init__(
        self, keys: Mapping[str, Any], *, allow_provider_keys: bool, salt: str, gateway_key_prefix: str = ""
    ):
        self._keys = [_parse_key(name, entry) for name, entry in keys.items()]
        self._allow_provider_keys = allow_provider_keys
        self._salt = salt.encode()
        self._prefix = gateway_key_prefix

    def caller(self, headers: Mapping[str, str]) -> Caller:
        """Raises AuthenticationError (401) when there is no key, or an unknown one where only gateway keys count."""
        key = presented_key(headers)
        if not key:
            raise AuthenticationError(
                "You didn't provide an API key. Send it in the x-portkey-api-key header or as "
                "'Authorization: Bearer <key>'.",
                code=None,
            )
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        # Compare against every key, always, so timing says nothing about which (or whether one) matched.
        for entry in self._keys:
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        if found is not None:
            return Caller(tenant="key:" + found.name, gateway_key=found.name, credentials=found.credentials)
        if self._prefix and key.startswith(self._prefix):
            # A mistyped or revoked gateway key must never reach a provider as if it were the provider's.
            raise AuthenticationError("Incorrect API key provided: no gateway key matches it.")
        if not self._allow_provider_keys:
            raise AuthenticationError(
                "Incorrect API key provided. This gateway accepts only its own gateway keys, not provider keys."
            )
        tenant = hmac.new(self._salt, key.encode(), hashlib.sha256).hexdigest()[:32]
        return Caller(tenant="pk:" + tenant, provider_key=key)


def presented_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("x-portkey-api-key")
    if key:
        return key.strip()
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _parse_key(name: str, entry: Any) -> _GatewayKey:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("digest"), str):
        raise SettingsError(f'keys.{name} needs a digest = "sha256:<hex>"')
    scheme, _, hexdigest = entry["digest"].partition(":")
    try:
        digest = bytes.fromhex(hexdigest)
    except ValueError:
        digest = b""
    if scheme != "sha256" or len(digest) != 32:
        raise SettingsError(f'keys.{name}.digest must be "sha256:<64 hex digits>"')
    credentials = {}
    for provider, creds in (entry.get("providers") or {}).items():
        if isinstance(creds, Mapping) and isinstance(creds.get("api_key"), str):
            credentials[provider] = creds["api_key"]
    return _GatewayKey(name=name, digest=digest, credentials=credentials)

"""Caller keys -> Caller: which tenant is asking and with which provider credentials. Keys are never kept in clear."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

from .config import SettingsError, did_you_mean
from .errors import AuthenticationError, unknown_path


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


def parse_digest(text: str) -> bytes | None:
    """``sha256:<64 hex digits>`` -> the 32 bytes of the digest; None for anything else."""
    scheme, _, hexdigest = text.partition(":")
    try:
        digest = bytes.fromhex(hexdigest)
    except ValueError:
        return None
    return digest if scheme == "sha256" and len(digest) == 32 else None


def check_admin(admin_digest: bytes | None, headers: Mapping[str, str]) -> None:
    """Let the operator's admin key through, and nothing else.

    Raises NotFound (the answer of an unknown path) when no admin key is configured: the admin surface does
    not exist then, and says nothing of itself to whoever probes for it. Raises AuthenticationError (401)
    for a missing or wrong key. The digests are compared in constant time.
    """
    if admin_digest is None:
        raise unknown_path()
    key = presented_key(headers)
    if not key:
        raise AuthenticationError(
            "You didn't provide the admin key. Send it in the x-portkey-api-key header or as "
            "'Authorization: Bearer <key>'.",
            code=None,
        )
    if not hmac.compare_digest(hashlib.sha256(key.encode()).digest(), admin_digest):
        raise AuthenticationError("Incorrect admin key provided.")


class Authenticator:
    """Turns the request's key into a Caller."""

    def __init__(
        self,
        keys: Mapping[str, Any],
        *,
        allow_provider_keys: bool,
        salt: str | Callable[[], str],
        gateway_key_prefix: str = "",
        admin_key: str = "",
    ):
        self._keys = [_parse_key(name, entry) for name, entry in keys.items()]
        # The admin key's digest (config.py checked its form); None: no admin surface.
        self._admin = parse_digest(admin_key) if admin_key else None
        self._allow_provider_keys = allow_provider_keys
        # A callable salt is read at the first provider-key request (from the store) and kept.
        self._salt = salt.encode() if isinstance(salt, str) else None
        self._salt_source = salt
        # Compared without case: `GW-x` for a prefix `gw-` is a mistyped gateway key, never a provider's.
        self._prefix = gateway_key_prefix.lower()

    def credentials_by_key(self) -> dict[str, list[str]]:
        """The providers each gateway key has credentials for, by key name (for the start-up checks)."""
        return {entry.name: sorted(entry.credentials) for entry in self._keys}

    def check_admin(self, headers: Mapping[str, str]) -> None:
        """The request carries the operator's admin key (see ``check_admin``); raises otherwise."""
        check_admin(self._admin, headers)

    def gateway_caller(self, name: str) -> Caller | None:
        """The caller of the gateway key named ``name`` (a background run's), None once it is configured no more."""
        for entry in self._keys:
            if entry.name == name:
                return Caller(tenant="key:" + entry.name, gateway_key=entry.name, credentials=entry.credentials)
        return None

    def caller(self, headers: Mapping[str, str]) -> Caller:
        """Raises AuthenticationError (401) when there is no key, or an unknown one where only gateway keys count."""
        key = presented_key(headers)
        if not key:
            raise AuthenticationError(
                "You didn't provide an API key. Send it in the x-portkey-api-key header or as "
                "'Authorization: Bearer <key>'.",
                code=None,
            )
        raw = key.encode()
        found = None
        if self._keys:
            digest = hashlib.sha256(raw).digest()
            # Compare against every key, always, so timing says nothing about which (or whether one) matched.
            for entry in self._keys:
                if hmac.compare_digest(digest, entry.digest):
                    found = entry
        if found is not None:
            return Caller(tenant="key:" + found.name, gateway_key=found.name, credentials=found.credentials)
        if self._prefix and key[: len(self._prefix)].lower() == self._prefix:
            # A mistyped or revoked gateway key must never reach a provider as if it were the provider's.
            raise AuthenticationError("Incorrect API key provided: no gateway key matches it.")
        if not self._allow_provider_keys:
            raise AuthenticationError(
                "Incorrect API key provided. This gateway accepts only its own gateway keys, not provider keys."
            )
        # hmac.digest is the one-shot C path: hmac.new builds an HMAC object in Python on every request.
        salt = self._salt
        if salt is None:
            salt = self._salt = self._salt_source().encode()  # type: ignore[operator]
        tenant = hmac.digest(salt, raw, "sha256").hex()[:32]
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
    """One ``[keys.NAME]`` table. Raises SettingsError naming the key at fault, unknown keys included."""
    if not isinstance(entry, Mapping):
        raise SettingsError("must be a table", key=f"keys.{name}")
    _known_keys(entry, ("digest", "providers", "limits"), f"keys.{name}")  # limits: see limits.py
    if not isinstance(entry.get("digest"), str):
        raise SettingsError('is missing: give digest = "sha256:<hex>"', key=f"keys.{name}.digest")
    digest = parse_digest(entry["digest"])
    if digest is None:
        raise SettingsError('must be "sha256:<64 hex digits>"', key=f"keys.{name}.digest")
    providers = entry.get("providers") or {}
    if not isinstance(providers, Mapping):
        raise SettingsError("must be a table of [keys.NAME.providers.PROVIDER] tables", key=f"keys.{name}.providers")
    credentials = {}
    for provider, creds in providers.items():
        where = f"keys.{name}.providers.{provider}"
        if not isinstance(creds, Mapping):
            raise SettingsError("must be a table with api_key", key=where)
        _known_keys(creds, ("api_key",), where)
        if not isinstance(creds.get("api_key"), str):
            raise SettingsError("must be a string", key=f"{where}.api_key")
        credentials[provider] = creds["api_key"]
    return _GatewayKey(name=name, digest=digest, credentials=credentials)


def _known_keys(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            hint = did_you_mean(key, known)
            raise SettingsError(f"unknown key{hint} (known keys: {', '.join(known)})", key=f"{where}.{key}")

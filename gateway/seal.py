"""The AES-GCM box of the gateway's secrets at rest: compaction items and background jobs' provider keys.

Its key is one of the store's secrets (32 random bytes in hex: an AES-256 key), the same for every worker
and host sharing the store, read at first use (StoreUnavailable while the store cannot be reached). A
token is a fresh 96-bit nonce and the ciphertext, URL-safe base64; what it is bound to (a tenant, a
response id) is authenticated as associated data, so a token moved to another owner does not open.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class Box:
    def __init__(self, key_hex: Callable[[], str]):
        self._key_hex = key_hex
        self._cipher: AESGCM | None = None

    @property
    def _aead(self) -> AESGCM:
        if self._cipher is None:
            self._cipher = AESGCM(bytes.fromhex(self._key_hex()))
        return self._cipher

    def seal(self, plain: bytes, bound_to: str) -> str:
        nonce = os.urandom(12)
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, plain, bound_to.encode())).decode()

    def open(self, token: str, bound_to: str) -> bytes:
        """The plain bytes; ValueError when ``token`` was not sealed by this box for ``bound_to``, or was altered."""
        aead = self._aead  # outside the try: a store that cannot be reached is not a bad token
        try:
            raw = base64.urlsafe_b64decode(token.encode())
            return aead.decrypt(raw[:12], raw[12:], bound_to.encode())
        except (InvalidTag, ValueError, binascii.Error, TypeError):
            raise ValueError("not sealed by this gateway for this owner") from None

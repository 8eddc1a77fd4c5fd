"""The console's sessions: a login with the admin key, limited per address; a signed cookie; CSRF tokens.

The cookie holds ``{"sid", "csrf"}`` signed (itsdangerous, HMAC-SHA1 over a derived key) with a secret the
store keeps (``Database.secret``) joined to the admin key's digest: every worker and every host sharing the
store accepts it, and changing the admin key ends every session. A logout ends its session in the store too
(``ConsoleStore.end_session``), so a copied cookie is no good after it. The login form's own CSRF token rides
in a short-lived cookie of its own, signed the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "aigw_console"
LOGIN_COOKIE = "aigw_console_login"
MAX_AGE = 8 * 3600  # seconds a session lasts from its login
LOGIN_MAX_AGE = 3600  # seconds a login form stays good
LOGIN_ATTEMPTS = 10  # per address and LOGIN_WINDOW, successful ones included
LOGIN_WINDOW = 900


class Sessions:
    def __init__(self, store: Any, admin_digest: str, counter: Any):
        self._store = store
        self._admin = bytes.fromhex(admin_digest.partition(":")[2])
        self._counter = counter
        self._signers: dict[str, URLSafeTimedSerializer] = {}

    def _signer(self, salt: str) -> URLSafeTimedSerializer:
        signer = self._signers.get(salt)
        if signer is None:
            # Raises StoreUnavailable while the store cannot give its secret: the console answers 503.
            secret = self._store.secret("console_session") + ":" + self._admin.hex()
            signer = self._signers[salt] = URLSafeTimedSerializer(secret, salt=salt)
        return signer

    # ------------------------------------------------------------------ sessions
    def start(self) -> tuple[str, dict]:
        """A new session: the cookie's value and the session."""
        session = {"sid": secrets.token_hex(16), "csrf": secrets.token_urlsafe(24), "at": int(time.time())}
        return self._signer("console-session").dumps(session), session

    def read(self, cookie: str | None) -> dict | None:
        """The session a cookie holds, or None: missing, forged, expired or logged out."""
        if not cookie:
            return None
        try:
            session = self._signer("console-session").loads(cookie, max_age=MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(session, dict) or not isinstance(session.get("sid"), str):
            return None
        if self._store.console.session_ended(session["sid"]):
            return None
        return session

    def end(self, session: dict) -> None:
        self._store.console.end_session(session["sid"], float(session.get("at", time.time())) + MAX_AGE)

    # ------------------------------------------------------------------ login
    def login_form(self) -> tuple[str, str]:
        """A login form's CSRF token and the cookie that vouches for it."""
        token = secrets.token_urlsafe(24)
        return token, self._signer("console-login").dumps({"csrf": token})

    def login_token(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            held = self._signer("console-login").loads(cookie, max_age=LOGIN_MAX_AGE)
        except BadSignature:
            return None
        return held.get("csrf") if isinstance(held, dict) else None

    def attempt(self, address: str) -> bool:
        """Count a login attempt from ``address``; False once it has made LOGIN_ATTEMPTS in this window.

        Counted where the keys' limits are (Redis, the store, a SQLite file beside it): across workers and
        hosts. Raises limits.Unavailable when that counter cannot be reached (the login is refused then).
        """
        window = int(time.time() // LOGIN_WINDOW)
        return self._counter.add(f"console-login:{address}:{window}", 1, LOGIN_WINDOW) <= LOGIN_ATTEMPTS

    def admin(self, key: str) -> bool:
        return hmac.compare_digest(hashlib.sha256(key.encode()).digest(), self._admin)


def same_token(given: Any, expected: Any) -> bool:
    """A CSRF token check in constant time; anything but two non-empty strings fails."""
    if not isinstance(given, str) or not isinstance(expected, str) or not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def client_address(peer: str | None, forwarded: str | None) -> str:
    """The address a login is counted against: the peer's, or, when the peer is this host (nginx beside the
    gateway, as deploy/nginx.conf runs it; gunicorn trusts only 127.0.0.1's forwarded headers too), the
    address nginx appended last to X-Forwarded-For. IPv6 addresses count by their /64, which one client holds.
    Behind a proxy elsewhere every client has that proxy's address, and the limit is the site's.
    """
    address = peer or "-"
    if forwarded and address in ("127.0.0.1", "::1"):
        address = forwarded.rsplit(",", 1)[-1].strip() or address
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False))

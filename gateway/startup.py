"""Start-up checks, run once before any worker starts (in gunicorn's master, and by ``gateway check-config``).

The settings, the provider catalogue, the gateway keys, the saved routing configs and the store are each
checked as the workers will use them; the first fault becomes one line naming the file, the table and the
key (or the environment variable) at fault, and the process exits with status 2.
"""

from __future__ import annotations

from collections.abc import Mapping

from .config import Settings, SettingsError, explain

EXIT_STATUS = 2


class StartupError(Exception):
    """The gateway cannot start; ``str()`` is the one line to print."""


def check(environ: Mapping[str, str] | None = None, *, store: bool = True) -> Settings:
    """The settings, once everything they name has been checked. Raises StartupError."""
    # Imported here: gunicorn's master imports this module, and only needs the rest when it runs.
    from .auth import Authenticator
    from .errors import InvalidRequest
    from .providers import Catalogue
    from .routing import Router

    try:
        settings = Settings.load(environ=environ)
        catalogue = Catalogue(settings.providers)
        auth = Authenticator(settings.keys, allow_provider_keys=settings.allow_provider_keys, salt="")
        for name, providers in auth.credentials_by_key().items():
            for provider in providers:
                if catalogue.get(provider) is None:
                    raise SettingsError(
                        f"unknown provider (known: {', '.join(catalogue.names())})",
                        key=f"keys.{name}.providers.{provider}",
                    )
        try:
            Router(catalogue, configs=settings.configs, custom_hosts=settings.custom_hosts)
        except InvalidRequest as err:
            # Saved configs are checked with the request schema, whose errors name the field as `param`.
            raise SettingsError(err.message, key=err.param) from None
    except SettingsError as err:
        raise StartupError(explain(err, environ)) from None
    if store:
        _check_store(settings, environ)
    return settings


def _check_store(settings: Settings, environ: Mapping[str, str] | None) -> None:
    """Open the store, create or upgrade its schema and its tenant salt, and close it again.

    Done in the master so that one process migrates, and a database that cannot be reached stops the
    start with one line instead of every worker failing with a traceback.
    """
    from .store import Store

    store = None
    try:
        store = Store(settings.store_url, write_timeout=settings.store_write_timeout)
        store.migrate()
        if not settings.key_salt:
            store.secret("key_salt")
    except Exception as exc:  # any driver's or URL parser's error: all of them mean "cannot start"
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        why = reason[0] if reason else type(exc).__name__
        url = settings.masked()["store_url"]
        message = f"cannot open the store at {url}: {why}"
        raise StartupError(explain(SettingsError(message, key="store_url"), environ)) from None
    finally:
        if store is not None:
            # Nothing opened here may cross the fork: the workers open their own connections.
            store.dispose()

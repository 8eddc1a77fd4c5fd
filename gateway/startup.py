"""Start-up checks, run once before any worker starts (in gunicorn's master, and by ``gateway check-config``).

The settings, the provider catalogue, the gateway keys, the saved routing configs, the prompt files and the
store's URL are each checked as the workers will use them; the first fault becomes one line naming the file,
the table and the key (or the environment variable) at fault, and the process exits with status 2.

A store or queue that cannot be reached is not a fault of the settings: the gateway starts, says so in one
line (``probe``, run beside gunicorn's master), is not ready (``/readyz``) and serves once they are back.
gunicorn's master itself never opens the store: psycopg, imported there before gevent patches the workers,
would make every worker's database waits block the whole worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .config import Settings, SettingsError, SettingsErrors, did_you_mean, explain, explain_all

EXIT_STATUS = 2


class StartupError(Exception):
    """The gateway cannot start; ``lines`` says why (one line a mistake), ``status`` is the exit status."""

    status = EXIT_STATUS

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = list(lines)


class NotReady(StartupError):
    """The settings are right, and the store or the queue they name cannot be used now."""

    status = 1


def check(environ: Mapping[str, str] | None = None, *, store: bool = True) -> Settings:
    """The settings, once everything they name has been checked (the store and queue opened, with ``store``).

    Every mistake is found in one pass: the settings' own, then each provider table, gateway key and saved
    config they hold, each its own line. Raises StartupError; NotReady when only the store or the queue
    cannot be used now.
    """
    errors: list[SettingsError] = []
    try:
        settings = Settings.load(environ=environ)
    except SettingsErrors as err:
        errors += err.errors
        if err.partial is None:
            raise StartupError(*explain_all(err, environ)) from None
        settings = err.partial
    except SettingsError as err:  # the file cannot be read or parsed: nothing more can be checked
        raise StartupError(explain(err, environ)) from None
    errors += _named(settings)
    if errors:
        raise StartupError(*[explain(e, environ) for e in errors])
    if store:
        _check_store(settings, environ)
        _check_queue(settings, environ)
    return settings


def _named(settings: Settings) -> list[SettingsError]:
    """The mistakes in what the settings name: provider tables, gateway keys, the providers of prices, saved
    configs, the store's URL, prompt files.
    """
    # Imported here: gunicorn's master imports this module, and only needs the rest when it runs.
    from .auth import Authenticator
    from .errors import InvalidRequest
    from .prompts import load_files
    from .providers import Catalogue
    from .routing import Router

    errors: list[SettingsError] = []

    def collect(step: Callable[[], Any]) -> Any:
        try:
            return step()
        except SettingsError as err:
            errors.extend(getattr(err, "errors", None) or [err])
        except InvalidRequest as err:
            # Saved configs are checked with the request schema, whose errors name the field as `param`.
            errors.append(SettingsError(err.message, key=err.param))
        return None

    # Table by table, so that a mistake in one leaves the others checked.
    good = {n: t for n, t in settings.providers.items() if collect(lambda n=n, t=t: Catalogue({n: t})) is not None}
    catalogue = Catalogue(good)
    known = catalogue.names()
    for name, entry in settings.keys.items():
        auth = collect(lambda name=name, entry=entry: Authenticator({name: entry}, allow_provider_keys=True, salt=""))
        for provider in auth.credentials_by_key().get(name, []) if auth is not None else []:
            if catalogue.get(provider) is None and provider not in settings.providers:
                hint = did_you_mean(provider, known)
                errors.append(
                    SettingsError(
                        f"unknown provider{hint} (known: {', '.join(known)})", key=f"keys.{name}.providers.{provider}"
                    )
                )
    for name in settings.prices:
        provider = str(name).partition("/")[0]
        if provider and catalogue.get(provider) is None and provider not in settings.providers:
            hint = did_you_mean(provider, known)
            message = f"{name!r}: unknown provider {provider!r}{hint} (known: {', '.join(known)})"
            errors.append(SettingsError(message, key="prices"))
    hosts = settings.custom_hosts
    for name, config in settings.configs.items():
        if collect(lambda name=name, config=config: Router(catalogue, configs={name: config}, custom_hosts=hosts)):
            errors += _config_providers(config, f"configs.{name}", catalogue, set(settings.providers))
    collect(lambda: _check_store_url(settings))
    collect(lambda: load_files(settings.prompt_files))
    return errors


def _config_providers(config: Any, key: str, catalogue: Any, configured: set[str]) -> list[SettingsError]:
    """Providers a saved config names (its own, its targets', theirs...) that the catalogue does not have."""
    errors: list[SettingsError] = []
    if not isinstance(config, dict):
        return errors
    provider = config.get("provider")
    if isinstance(provider, str) and catalogue.get(provider) is None and provider not in configured:
        hint = did_you_mean(provider, catalogue.names())
        errors.append(SettingsError(f"unknown provider {provider!r}{hint}", key=f"{key}.provider"))
    for i, target in enumerate(config.get("targets") or []):
        errors += _config_providers(target, f"{key}.targets.{i}", catalogue, configured)
    return errors


def _check_store_url(settings: Settings) -> None:
    """The store's URL names a database this gateway can use, checked without opening it or importing its driver."""
    import os

    import sqlalchemy as sa
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    url = settings.masked()["store_url"]
    try:
        parsed = sa.make_url(settings.store_url)
    except ArgumentError:
        raise SettingsError(f"not a database URL: {url!r}", key="store_url") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise SettingsError(
            f"cannot open the store at {url}: the store is sqlite:///PATH or postgresql://..., not {parsed.drivername}",
            key="store_url",
        )
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        message = f"cannot open the store at {url}: no driver {parsed.drivername!r}"
        raise SettingsError(message, key="store_url") from None
    path = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not path.startswith("file:"):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise SettingsError(f"cannot open the store at {url}: no directory {folder}", key="store_url")


def _check_store(settings: Settings, environ: Mapping[str, str] | None) -> None:
    """Open the store, create or upgrade its schema and its tenant salt, and close it again.

    Raises NotReady (one line) when it cannot be reached or changed within ``store_write_timeout``.
    """
    from .store import Store
    from .store.engine import first_line
    from .store.postgres import deadline

    store = None
    try:
        store = Store(settings.store_url, write_timeout=settings.store_write_timeout)
        # migrate, not prepare: this line is the one the operator reads, without the store's log line.
        with deadline(settings.store_write_timeout):
            store.migrate()
        if not settings.key_salt:
            store.secret("key_salt")
    except Exception as exc:  # any driver's error: all of them mean "not now"
        url = settings.masked()["store_url"]
        message = f"cannot open the store at {url}: {first_line(exc)}"
        raise NotReady(explain(SettingsError(message, key="store_url"), environ)) from None
    finally:
        if store is not None:
            store.dispose()


def _check_queue(settings: Settings, environ: Mapping[str, str] | None) -> None:
    """A Redis queue answers a ping within a second; raises NotReady (one line) when it does not."""
    queue = settings.background_queue
    if not queue.startswith(("redis://", "rediss://", "unix://")):
        return  # a SQLite queue is a file beside the store, made at first use
    import redis

    client = redis.Redis.from_url(queue, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        message = f"cannot reach the background queue at {settings.masked()['background_queue']}: {exc}"
        raise NotReady(explain(SettingsError(message, key="background_queue"), environ)) from None
    finally:
        client.close()


def probe(environ: Mapping[str, str] | None = None) -> int:
    """Open the store (creating its schema) and the queue, as a worker will; one line on stderr when either
    cannot be used now. Run by gunicorn's master in a process of its own once it listens.
    """
    from .logs import say

    fmt = "text"
    try:
        settings = check(environ, store=False)
        fmt = settings.log_format
        _check_store(settings, environ)
        _check_queue(settings, environ)
    except StartupError as err:
        for line in err.lines:
            say(f"gateway: not ready: {line}", fmt)
        return err.status
    return 0


if __name__ == "__main__":
    raise SystemExit(probe())

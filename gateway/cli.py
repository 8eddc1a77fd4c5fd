"""The ``gateway`` command: ``serve`` (gunicorn), ``check-config``, Flask's ``run`` (dev server on 127.0.0.1:8787),
the store's maintenance (``migrate``, ``purge``) and the usage report (``usage``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any

import click
from flask import Flask
from flask.cli import FlaskGroup, run_command, with_appcontext

from . import __version__, create_app
from .config import SettingsError, explain_all, parse_age
from .startup import EXIT_STATUS, StartupError, check

DEV_PORT = 8787  # Flask's own default is 5000; the gateway's port is the same whichever server runs it


def _app() -> Flask:
    """The app for the commands that need one; a settings mistake is the same one line as at start-up."""
    try:
        return create_app()
    except SettingsError as err:
        for line in explain_all(err):
            click.echo(f"gateway: cannot start: {line}", err=True)
        sys.exit(EXIT_STATUS)


class _GatewayGroup(FlaskGroup):
    """Flask's command group with the gateway's commands and Flask's development server (``run``) only:
    Flask's ``routes`` and ``shell``, and its ``--env-file``, ``--app`` and ``--debug`` options, are for
    developing a Flask app, not for running this one (the gateway's settings come from GATEWAY_*).
    """

    def __init__(self, **kwargs: Any):
        super().__init__(add_default_commands=False, load_dotenv=False, set_debug_flag=False, **kwargs)
        self.params = [p for p in self.params if p.name not in ("env_file", "app", "debug")]
        self.add_command(run_command)


@click.group(
    cls=_GatewayGroup,
    create_app=_app,
    add_version_option=False,
    context_settings={"default_map": {"run": {"port": DEV_PORT}}},
)
@click.version_option(__version__, prog_name="gateway", message="%(prog)s %(version)s")
def main() -> None:
    """Manage the AI gateway."""


@main.command(with_appcontext=False)  # AppGroup's default would build an app here, in the master
@click.option("--bind", "-b", help="host:port to listen on (default: the `bind` setting, 127.0.0.1:8787)")
@click.option("--port", "-p", type=click.IntRange(0, 65535), help="port to listen on, on the `bind` setting's host")
@click.option("--workers", "-w", type=click.IntRange(1), help="worker processes (default: the `workers` setting)")
def serve(bind: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway under gunicorn, with gunicorn.conf.py's settings (the way to run it in production)."""
    if bind and port is not None:
        raise click.UsageError("give --bind or --port, not both")
    flags = json.dumps({"bind": bind, "port": port, "workers": workers})
    # A fresh interpreter: this one has imported Flask's CLI plugins (and with them ssl and urllib3), which
    # gevent's workers must find unimported to patch them.
    os.execv(sys.executable, [sys.executable, "-c", _SERVE, flags])


@main.command(with_appcontext=False, context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=click.IntRange(1), help="runs held at once (default: the setting)")
def worker(concurrency: int | None) -> None:
    """Run a background consumer alone (beside `gateway serve` with background_consumers = 0, or on more hosts)."""
    from .background.supervisor import worker_command

    args = worker_command(*(["--concurrency", str(concurrency)] if concurrency else []))
    # A fresh interpreter, as for serve: gevent must patch before anything imports ssl.
    os.execv(args[0], args)


_SERVE = "import json, sys; from gateway.gunicorn_config import Server; Server(**json.loads(sys.argv[1])).run()"


@main.command("check-config", with_appcontext=False)
@click.option("--no-store", is_flag=True, help="do not open the store (for CI without the database)")
def check_config(no_store: bool) -> None:
    """Check the settings, providers, keys and store as start-up does; print the effective settings.

    Secrets are masked. Exit status 2 and one line naming the file, table and key at fault on a mistake.
    """
    from .providers import Catalogue

    try:
        settings = check(store=not no_store)
    except StartupError as err:
        for line in err.lines:
            click.echo(f"gateway: {line}", err=True)
        sys.exit(err.status)
    click.echo(f"# gateway {__version__}: the effective settings (secrets masked)")
    catalogue = Catalogue(settings.providers)
    click.echo(f"# providers: {', '.join(catalogue.names())}")
    shown = settings.masked()
    # Every provider as the gateway will call it, built-in ones included: where it is and what it speaks,
    # beside what the settings say of it (a base_url is where a 502 "could not be reached" points).
    providers = {}
    for name in catalogue.names():
        provider = catalogue.get(name)
        entry = {"base_url": provider.base_url, "api": provider.api}
        providers[name] = {**entry, **shown["providers"].get(name, {})}
    shown["providers"] = providers
    click.echo(to_toml(shown), nl=False)


def _prepare(store: Any) -> None:
    """The store, its schema current; one line and exit status 1 when it cannot be reached."""
    from .errors import StoreUnavailable

    try:
        store.prepare()
    except StoreUnavailable as exc:
        from .store.engine import first_line

        url = store.engine.url.render_as_string(hide_password=True)
        click.echo(f"gateway: cannot open the store at {url}: {first_line(exc)}", err=True)
        sys.exit(1)


@main.command()
@with_appcontext
def migrate() -> None:
    """Create or upgrade the store's schema (start-up does this too)."""
    from .services import current_services

    svc = current_services()
    _prepare(svc.store)
    click.echo(f"store schema is current ({svc.store.engine.url.render_as_string(hide_password=True)})")


@main.command()
@click.option("--older-than", "older_than", help="age like 30d or 12h; default: the `retention` setting")
@click.option("--batch", default=1000, show_default=True, help="responses deleted per transaction")
@with_appcontext
def purge(older_than: str | None, batch: int) -> None:
    """Delete stored responses older than an age, in batches, with a progress line on a terminal; the events
    of background responses that ended longer ago than `background_event_retention`; and the usage rows older
    than `usage_retention` (never by --older-than: what was spent is kept for its own time).
    """
    from .services import current_services

    svc = current_services()
    _prepare(svc.store)
    age_text = older_than or svc.settings.retention
    events_text = svc.settings.background_event_retention
    usage_text = svc.settings.usage_retention
    if not age_text and not events_text and not usage_text:
        raise click.UsageError("give --older-than or set the `retention` setting")
    try:
        age = parse_age(age_text) if age_text else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    if events_text:
        try:
            events_age = parse_age(events_text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="background_event_retention") from None
        cutoff = time.time() - events_age
        runs = 0
        while done := svc.store.background.purge_events(cutoff, batch):
            runs += done
        if runs or age is None:
            click.echo(f"purged the events of {runs} background responses that ended more than {events_text} ago")
    if usage_text:
        try:
            usage_age = parse_age(usage_text)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="usage_retention") from None
        rows = svc.store.usage.purge(usage_age, batch=batch)
        if rows or age is None:
            click.echo(f"purged {rows} usage rows older than {usage_text}")
    if age is None:
        return
    # A line rewritten in place (\r) only makes sense on a terminal; in a log (cron) it would read as the
    # count twice on one line, so there only the final line is written.
    tty = sys.stdout.isatty()
    progress = (lambda n: click.echo(f"\rpurged {n} responses", nl=False)) if tty else None
    total = svc.store.purge(age, batch=batch, progress=progress)
    click.echo(f"{chr(13) if tty else ''}purged {total} responses older than {age_text}")


@main.command()
@click.option("--since", default="7d", show_default=True, help="an age (7d, 12h), a date (2025-06-01, UTC) or ISO time")
@click.option("--until", help="the same forms (default: now)")
@click.option("--group-by", "group_by", help="any of key, provider, model, day, comma-separated (default: all four)")
@click.option("--json", "as_json", is_flag=True, help="print the JSON of GET /v1/gateway/usage instead of a table")
@with_appcontext
def usage(since: str, until: str | None, group_by: str | None, as_json: bool) -> None:
    """Print what was spent: requests, tokens and cost (USD) by key, provider, model and UTC day, from the
    usage table (as GET /v1/gateway/usage answers).
    """
    from . import usage as report
    from .errors import InvalidRequest, StoreUnavailable
    from .services import current_services

    svc = current_services()
    _prepare(svc.store)
    try:
        made = report.report(svc.store.usage, since, until, group_by)
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message, param_hint=f"--{(exc.param or 'since').replace('_', '-')}") from None
    except StoreUnavailable:
        click.echo("gateway: the store did not answer the report's query in time", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report.as_json(made), indent=2))
        return
    click.echo(f"usage from {made['since']} to {made['until']} (cost in USD; '-': no known price)")
    click.echo(report.table(made), nl=False)


def to_toml(values: dict[str, Any]) -> str:
    """Settings as TOML: scalars first, then each table (for ``check-config``; the shapes settings have)."""
    lines: list[str] = []
    _toml_table(values, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_table(table: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if path and (scalars or not tables):
        lines.append("")
        lines.append(f"[{'.'.join(_toml_key(p) for p in path)}]")
    for key, value in scalars.items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables.items():
        _toml_table(value, [*path, key], lines)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    # JSON's string escapes are TOML's basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)

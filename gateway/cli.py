"""The ``gateway`` command: Flask's CLI (``gateway run``, ``gateway routes``) plus the store's maintenance."""

from __future__ import annotations

import re

import click
from flask.cli import FlaskGroup, with_appcontext

from . import create_app
from .services import current_services

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` -> seconds. Raises ValueError for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match:
        raise ValueError(f"not an age: {text!r} (use e.g. 30d, 12h, 90m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


@click.group(cls=FlaskGroup, create_app=lambda: create_app())
def main() -> None:
    """Manage the AI gateway."""


@main.command()
@with_appcontext
def migrate() -> None:
    """Create or upgrade the store's schema (start-up does this too)."""
    svc = current_services()
    svc.store.migrate()
    click.echo(f"store schema is current ({svc.store.engine.url.render_as_string(hide_password=True)})")


@main.command()
@click.option("--older-than", "older_than", help="age like 30d or 12h; default: the `retention` setting")
@click.option("--batch", default=1000, show_default=True, help="responses deleted per transaction")
@with_appcontext
def purge(older_than: str | None, batch: int) -> None:
    """Delete stored responses older than an age, in batches, with a progress line."""
    svc = current_services()
    age_text = older_than or svc.settings.retention
    if not age_text:
        raise click.UsageError("give --older-than or set the `retention` setting")
    try:
        age = parse_age(age_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    total = svc.store.purge(age, batch=batch, progress=lambda n: click.echo(f"\rpurged {n} responses", nl=False))
    click.echo(f"\rpurged {total} responses older than {age_text}")

"""The ``gateway`` command: Flask's CLI (``gateway run``, ``gateway routes``) plus the gateway's own commands."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from . import create_app


@click.group(cls=FlaskGroup, create_app=lambda: create_app())
def main() -> None:
    """Manage the AI gateway."""

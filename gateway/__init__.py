"""An AI gateway that speaks the OpenAI Responses API and relays it to many providers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .config import Settings

__version__ = "0.1.0"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings in layers (``config`` is the last layer), components, blueprints, errors."""
    from . import api, errors, services

    settings = Settings.load(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    logging.getLogger("gateway").setLevel(settings.log_level.upper())
    services.init_app(app, settings)
    errors.init_app(app)
    api.init_app(app)
    return app

"""An AI gateway that speaks the OpenAI Responses API and relays it to many providers."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
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
    _configure_logging(settings.log_level)
    services.init_app(app, settings)
    errors.init_app(app)
    api.init_app(app)
    return app


def _configure_logging(level: str) -> None:
    """The access log is one JSON object a line on stderr; other gateway messages go beside it as text.

    Handlers are added once per process, and only where the host application has set none of its own.
    """
    logger = logging.getLogger("gateway")
    logger.setLevel(level.upper())
    access = logging.getLogger("gateway.access")
    if not access.handlers:
        # Request threads only put the record on a queue; one thread per process writes them out.
        # Writing from every request thread made them queue on the handler's lock (seen in py-spy:
        # logging's Handler.acquire was the largest busy frame under load).
        records: queue.SimpleQueue = queue.SimpleQueue()
        writer = logging.StreamHandler()
        writer.setFormatter(logging.Formatter("%(message)s"))
        listener = logging.handlers.QueueListener(records, writer)
        listener.start()
        atexit.register(listener.stop)
        access.addHandler(logging.handlers.QueueHandler(records))
        access.propagate = False
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)

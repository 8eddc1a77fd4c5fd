"""An AI gateway that speaks the OpenAI Responses API and relays it to many providers."""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .config import Settings, pinned

__version__ = "0.1.0"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings in layers (``config`` is the last layer), components, blueprints, errors."""
    from . import api, errors, services

    # Under gunicorn, the settings its master checked (config.pin); else read in layers here.
    settings = (config is None and pinned()) or Settings.load(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    _configure_logging(settings.log_level, settings.log_format)
    services.init_app(app, settings)
    errors.init_app(app)
    api.init_app(app)
    if settings.admin_key:  # the operator's console exists only with an admin key to log in with
        from . import console

        console.init_app(app)
    return app


def _configure_logging(level: str, fmt: str = "text") -> None:
    """The access log is one JSON object a line on stderr; other gateway messages go beside it as text.

    Handlers are added once per process, and only where the host application has set none of its own.
    """
    logger = logging.getLogger("gateway")
    logger.setLevel(level.upper())
    access = logging.getLogger("gateway.access")
    if not access.handlers:
        writer = _LineWriter(sys.stderr)
        atexit.register(writer.flush)
        access.addHandler(writer)
        access.propagate = False
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        if fmt == "json":
            from .logs import JsonFormatter

            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


class _LineWriter(logging.Handler):
    """The access log's handler: each record's message is a line, and one thread per process writes the lines
    gathered since its last write in one write.

    Requests only append their line. Writing from every request thread made them queue on the handler's
    lock (seen in py-spy: logging's Handler.acquire was the largest busy frame under load), and logging's
    QueueHandler copied each record and woke the writer once per line (45 us a line under gevent, against
    20 us here).
    """

    def __init__(self, stream: Any):
        super().__init__()
        self._stream = stream
        self._lines: collections.deque[str] = collections.deque()
        self._wake = threading.Event()
        threading.Thread(target=self._run, name="access-log", daemon=True).start()

    def handle(self, record: logging.LogRecord) -> bool:
        self.write_line(record.getMessage())
        return True

    def write_line(self, line: str) -> None:
        """One line, as the access log writes it without a LogRecord (Observer.finish)."""
        # No handler lock: deque appends and pops are atomic.
        self._lines.append(line)
        if not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        lines = []
        with contextlib.suppress(IndexError):
            while True:
                lines.append(self._lines.popleft())
        if lines:
            with contextlib.suppress(OSError, ValueError):
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self.flush()

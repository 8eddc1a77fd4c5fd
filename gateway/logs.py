"""One JSON object a line for log records (``log_format = "json"``): the gateway's own lines and gunicorn's, so
that a log shipper reads stderr as one format with the access log.
"""

from __future__ import annotations

import logging
import time

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def gunicorn_logconfig() -> dict:
    """gunicorn's ``logconfig_dict`` for JSON lines (its access log stays off: the gateway writes its own).

    gunicorn updates its default dictionary with this one key by key, so the handlers its root logger
    names are given here too.
    """
    stderr = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": ["console"]},
        "formatters": {"json": {"()": "gateway.logs.JsonFormatter"}},
        "handlers": {"console": stderr, "error_console": stderr},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


def say(message: str, fmt: str, level: str = "error") -> None:
    """One line of the gateway's own on stderr, outside any logger (start-up and reload verdicts)."""
    import sys

    if fmt == "json":
        record = logging.LogRecord("gateway", getattr(logging, level.upper()), "", 0, message, None, None)
        message = JsonFormatter().format(record)
    print(message, file=sys.stderr, flush=True)

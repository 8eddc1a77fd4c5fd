"""The task queue of background runs: Huey, on a SQLite file by default, on Redis when hosts share the work.

Huey was chosen for its embedded default (a SQLite file needs no server, as the store needs none) with Redis
for several hosts behind the same API, and for its greenlet worker type: a run spends minutes waiting on a
provider, so one consumer process holds many of them as greenlets, not threads.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from huey import Huey

    from ..config import Settings


def queue_location(settings: Settings) -> str:
    """The queue's URL: the setting, or a SQLite file beside a SQLite store (else in the working directory)."""
    if settings.background_queue:
        return settings.background_queue
    store = settings.store_url
    if store.startswith("sqlite"):
        path = sa.make_url(store).database
        if path and path != ":memory:" and not path.startswith("file:"):
            root, _ = os.path.splitext(path)
            return f"sqlite:///{root}-queue.sqlite3"
    return "sqlite:///gateway-queue.sqlite3"


def make_queue(settings: Settings, name: str) -> Huey:
    """A Huey instance for the queue named ``name`` at the configured location.

    Results are not kept: a run's outcome is its response in the store. Raises ValueError for a URL that is
    neither ``sqlite:///`` nor ``redis://``.
    """
    from huey import RedisHuey, SqliteHuey

    url = queue_location(settings)
    if url.startswith(("redis://", "rediss://", "unix://")):
        # Blocking reads: an idle consumer waits in BRPOP instead of polling.
        return RedisHuey(f"gw-{name}", url=url, blocking=True, read_timeout=1, results=False, utc=True)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        # WAL, and fsync on commit: a queued run acknowledged to a client survives a power cut.
        return SqliteHuey(f"gw-{name}", filename=path, results=False, utc=True, fsync=True, timeout=5)
    raise ValueError(f"background_queue must be sqlite:///PATH or redis://HOST:PORT/DB, not {url!r}")

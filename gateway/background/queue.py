"""The task queue of background runs: Huey, on a SQLite file by default, on Redis when hosts share the work.

Huey was chosen for its embedded default (a SQLite file needs no server, as the store needs none) with Redis
for several hosts behind the same API, and for its greenlet worker type: a run spends minutes waiting on a
provider, so one consumer process holds many of them as greenlets, not threads.
"""

from __future__ import annotations

import os
import re
import time
from typing import TYPE_CHECKING, Any

import orjson
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
    common = {"results": False, "utc": True, "serializer": JobSerializer()}
    if url.startswith(("redis://", "rediss://", "unix://")):
        # Blocking reads: an idle consumer waits in BRPOP instead of polling.
        return RedisHuey(f"gw-{name}", url=url, blocking=True, read_timeout=1, **common)
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        # Owner-only, as the store's file: its jobs name responses, and SQLite gives -wal and -shm its mode.
        from ..store.engine import private_sqlite_file

        private_sqlite_file(sa.make_url(url))
        # WAL, and fsync on commit: a queued run acknowledged to a client survives a power cut.
        return SqliteHuey(f"gw-{name}", filename=path, fsync=True, timeout=5, **common)
    raise ValueError(f"background_queue must be sqlite:///PATH or redis://HOST:PORT/DB, not {url!r}")


class NotAJob(ValueError):
    """A queue message that is not one of the gateway's jobs: it is dropped, never run."""


# A job names a queued response; its body, headers and keys stay in the store (sealed where secret).
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
_JOB_KEYS = frozenset({"task", "id", "run"})


class JobSerializer:
    """Queue messages as JSON data, ``{"task", "id", "run"}``, never pickles (Huey's serializer interface).

    Huey pickles its messages by default: anyone who could write to the queue (its Redis, or its SQLite file)
    ran code of their choosing in the consumer with one LPUSH. A job here is three strings, and a message
    that is anything else is refused with NotAJob before anything of it is used.
    """

    def serialize(self, message: Any) -> bytes:
        args = message.args
        if len(args) != 1 or not isinstance(args[0], str) or message.kwargs or message.on_complete or message.eta:
            raise TypeError("a background job is one response id, run now")
        return orjson.dumps({"task": message.name, "id": message.id, "run": args[0]})

    def deserialize(self, data: bytes) -> Any:
        # Not at the top: a process that never queues a run never imports Huey (service.Background.queue).
        from huey.registry import Message

        try:
            job = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise NotAJob(f"not JSON ({len(data)} bytes)") from None
        if not (
            isinstance(job, dict)
            and job.keys() == _JOB_KEYS
            and all(isinstance(job[key], str) for key in _JOB_KEYS)
            and _RUN_ID.fullmatch(job["run"])
            and _RUN_ID.fullmatch(job["id"])
        ):
            raise NotAJob(f"not a job's shape ({len(data)} bytes)")
        fields = dict.fromkeys(Message._fields)
        fields.update(id=job["id"], name=job["task"], retries=0, retry_delay=0, args=(job["run"],), kwargs={})
        return Message(**fields)


class QueueHealth:
    """Whether the queue answered last time, said in one log line when it stops answering and one when it
    answers again, however many calls fail meanwhile (Redis down made a consumer log a traceback a loop).
    """

    def __init__(self, log: Any):
        self._log = log
        self.down_since: float | None = None  # time.time() of the first failure of this outage
        self.reason = ""
        self._failures = 0

    def backoff(self) -> float:
        """Seconds to wait before the next try while the queue is down: 0.1 doubling up to 5."""
        return min(5.0, 0.1 * 2 ** min(self._failures, 6))

    def failed(self, exc: BaseException) -> None:
        self._failures += 1
        if self.down_since is None:
            self.down_since = time.time()
            lines = str(exc).strip().splitlines()
            self.reason = (lines[0] if lines else type(exc).__name__)[:200]
            self._log.warning("background queue unreachable: %s (retried quietly until it answers)", self.reason)

    def ok(self) -> None:
        self._failures = 0
        if self.down_since is not None:
            self._log.warning("background queue reachable again after %.0f s", time.time() - self.down_since)
            self.down_since = None

    def state(self) -> dict:
        if self.down_since is None:
            return {"status": "ok"}
        return {"status": "unreachable", "since": int(self.down_since), "reason": self.reason}

"""The request side of background responses: submit, read, follow and cancel; the task queue; the job seal."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from .. import sse
from ..errors import GatewayError, InvalidRequest, NotFound, StoreUnavailable, not_found_response
from ..reply import Reply, error_event
from ..seal import Box
from ..sse import TERMINAL_EVENTS
from ..store.background import LimitReached, RunState
from . import events
from .queue import QueueHealth, make_queue

if TYPE_CHECKING:
    from huey import Huey

    from ..auth import Caller
    from ..config import Settings
    from ..store import Store, StoredResponse

log = logging.getLogger("gateway")

TASK = "gateway.background.run"
# Request headers a run needs again in the consumer: the routing ones, and those passed to native providers.
_KEPT_HEADERS = ("x-portkey-provider", "x-portkey-config", "x-portkey-custom-host")
_KEPT_PREFIXES = ("openai-",)
# How often a process re-reads the progress of the runs it follows (one query for all of them).
FOLLOW_INTERVAL = 0.03
_PAGE = 500


class TooManyRuns(GatewayError):
    """429: the tenant has as many live background responses as ``background_max_per_tenant`` allows."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QueueUnavailable(GatewayError):
    """503: the task queue could not take the run; nothing was acknowledged."""

    status = 503
    type = "server_error"
    code = "queue_unavailable"


@dataclasses.dataclass(frozen=True)
class Job:
    """What a consumer needs to run a queued response, as plain values."""

    body: dict
    headers: dict[str, str]
    gateway_key: str | None
    provider_key: str | None  # the caller's own provider key, sealed while stored


class Background:
    """The app's background component: the task queue, the job seal, and the followers' shared watch."""

    def __init__(self, settings: Settings, store: Store):
        self.store = store
        self.max_per_tenant = settings.background_max_per_tenant
        self.lease_timeout = settings.background_lease_timeout
        self.queued_timeout = settings.background_queued_timeout
        self.max_unproven = settings.background_max_unproven
        self.concurrency = settings.background_concurrency
        self.graceful_timeout = settings.graceful_timeout
        self._settings = settings
        self._queue: Huey | None = None
        self._queue_lock = threading.Lock()
        self._box = Box(lambda: store.secret("background_key"))
        self.health = QueueHealth(log)  # as this process last found the queue
        self._executor: Any = None  # set in consumer processes (consumer.Runner)
        self._run: Any = None
        self.watch = Watch(store)

    @property
    def queue(self) -> Huey:
        """The task queue, made at its first use: a worker that never sees a background request never
        imports Huey and its Redis client (21 MB per process, measured).
        """
        with self._queue_lock:
            if self._queue is None:
                # The queue's name comes from the store, so that gateways sharing a store share a queue, and
                # two deployments sharing one Redis never run each other's jobs.
                queue = make_queue(self._settings, self.store.secret("queue_name")[:16])
                self._run = queue.task(name=TASK, retries=0)(self._execute)
                self._queue = queue
            return self._queue

    # ------------------------------------------------------------------ queue
    def enqueue(self, response_id: str) -> None:
        try:
            self.queue  # noqa: B018 - made at first use; it registers the task
            self._run(response_id)
        except Exception as exc:  # huey's storage raises its backend's own errors (sqlite3, redis)
            self.health.failed(exc)
            raise QueueUnavailable("The gateway's background queue is unavailable; try again shortly.") from exc
        self.health.ok()

    def attach(self, executor: Any) -> None:
        """Run the queue's jobs with ``executor.execute(response_id)`` (a consumer process)."""
        self._executor = executor

    def _execute(self, response_id: str) -> None:
        if self._executor is None:
            raise RuntimeError("background jobs run in consumer processes only")
        self._executor.execute(response_id)

    # ------------------------------------------------------------------ job
    def seal_job(self, response_id: str, caller: Caller, headers: Mapping[str, str], body: dict) -> str:
        kept = {
            k.lower(): v
            for k, v in headers.items()
            if k.lower() in _KEPT_HEADERS or k.lower().startswith(_KEPT_PREFIXES)
        }
        provider_key = None
        if caller.provider_key is not None:
            provider_key = self._box.seal(caller.provider_key.encode(), response_id)
        # The routing headers travel sealed too: a config's targets may carry api_key, and openai-* headers
        # what the caller chose to send; neither is kept in clear while the run waits.
        headers = self._box.seal(orjson.dumps(kept), response_id) if kept else None
        # So do an mcp tool's headers and authorization: the MCP server's credentials.
        body, secrets = _mcp_secrets_out(body)
        job = {"body": body, "sealed_headers": headers, "gateway_key": caller.gateway_key, "provider_key": provider_key}
        if secrets:
            job["sealed_mcp"] = self._box.seal(orjson.dumps(secrets), response_id)
        return orjson.dumps(job).decode()

    def open_job(self, response_id: str, job: str) -> Job:
        data = orjson.loads(job)
        key = None
        if data.get("provider_key"):
            key = self._box.open(data["provider_key"], response_id).decode()
        if data.get("sealed_headers"):
            headers = orjson.loads(self._box.open(data["sealed_headers"], response_id))
        else:
            headers = data.get("headers") or {}  # a job queued by a gateway before this one
        body = data["body"]
        if data.get("sealed_mcp"):
            body = _mcp_secrets_in(body, orjson.loads(self._box.open(data["sealed_mcp"], response_id)))
        return Job(body=body, headers=headers, gateway_key=data.get("gateway_key"), provider_key=key)

    # ------------------------------------------------------------------ request side
    def submit(
        self,
        *,
        caller: Caller,
        headers: Mapping[str, str],
        body: dict,
        provider: str,
        input_items: list[dict],
        previous_response_id: str | None,
        conversation: str | None,
    ) -> Reply:
        """Record the response as queued and put it on the queue; the reply is its JSON, or (``stream``)
        its events followed from the store. Raises TooManyRuns, StoreUnavailable, QueueUnavailable.
        """
        if self.store.url in ("sqlite://", "sqlite:///:memory:"):
            raise InvalidRequest(
                "Background responses need a store that the gateway's consumer processes can open; this gateway's "
                "store_url is an in-memory database.",
                param="background",
                code="unsupported_parameter",
            )
        response = events.queued(body, previous_response_id, conversation)
        job = self.seal_job(response["id"], caller, headers, body)
        try:
            self.store.background.submit(
                tenant=caller.tenant,
                provider=provider,
                response=response,
                input_items=input_items,
                job=job,
                first_events=events.opening(response),
                limit=self.max_per_tenant,
                unproven_limit=self.max_unproven,
            )
        except LimitReached as err:
            if err.unproven:
                raise TooManyRuns(
                    "Keys with no completed response yet share a few background responses at a time (the "
                    "gateway's `background_max_unproven`, "
                    f"{self.max_unproven}); make a response in the foreground first, or try again shortly.",
                    param="background",
                ) from None
            raise TooManyRuns(
                f"This key has {self.max_per_tenant} background responses queued or running, the gateway's "
                "`background_max_per_tenant`; wait for one to finish or cancel one.",
                param="background",
            ) from None
        try:
            self.enqueue(response["id"])
        except QueueUnavailable:
            # Nothing was acknowledged: the record must not stay queued for a job that will never run.
            self.store.background.end(response["id"], "failed", events.failed("The background queue refused the run."))
            raise
        if body.get("stream"):
            return self.follow(response["id"], -1)
        return Reply(200, {}, orjson.dumps(response), data=response)

    def current(self, record: StoredResponse) -> dict:
        """The response as it stands: its record once ended, else the record and its stored events."""
        state = self.store.background.state(record.id)
        if state is None or not state.live:
            return record.body
        if state.expired(time.time()):
            ended = self.expire(record.id)
            if ended is not None:
                return ended
        latest = self.store.get(record.tenant, record.id)
        if latest is None:
            raise not_found_response(record.id)
        state = self.store.background.state(record.id)
        if state is None or not state.live:
            return latest.body
        return events.accumulate(latest.body, self.store.background.all_events(record.id))

    def replay(self, record: StoredResponse, starting_after: int | None) -> Reply:
        """``GET ?stream=true``: the stored events after ``starting_after``, then live ones to the end."""
        state = self.store.background.state(record.id)
        if state is None:
            raise NotFound(
                f"The events of response '{record.id}' are no longer kept (the gateway's "
                "`background_event_retention`); GET it without stream."
            )
        after = -1 if starting_after is None else starting_after
        if after > state.last_seq:
            raise InvalidRequest(
                f"starting_after {after} is past the last event of response '{record.id}' ({state.last_seq}).",
                param="starting_after",
            )
        return self.follow(record.id, after)

    def cancel(self, record: StoredResponse) -> dict:
        """End a live run ``cancelled`` with its output so far; a finished one is returned unchanged."""
        ended = self.store.background.end(record.id, "cancelled", events.cancelled)
        if ended is not None:
            return ended
        return self.current(record)

    def expire(self, response_id: str) -> dict | None:
        """End a run whose consumer's lease ran out ``failed``; None when it was not expired."""
        message = (
            f"The background run stopped: the consumer running it sent no heartbeat for "
            f"{self.lease_timeout:g} s (it was killed or lost the store)."
        )
        ended = self.store.background.end(response_id, "failed", events.failed(message), only_expired=True)
        if ended is not None:
            log.warning("background response %s failed: its consumer's lease ran out", response_id)
        return ended

    def sweep_queued(self, now: float) -> None:
        """Runs queued longer than ``background_queued_timeout`` (their job lost: a claim that failed, a
        Redis that restarted empty) go on the queue again, once; still queued as long after, they end failed.
        """
        if self.queued_timeout <= 0:
            return
        again, given_up = self.store.background.stale_queued(now, self.queued_timeout)
        for response_id in again:
            log.warning("background response %s was queued %.0f s: queued again", response_id, self.queued_timeout)
            with contextlib.suppress(QueueUnavailable):  # ended below, a timeout later, if it stays lost
                self.enqueue(response_id)
        message = f"The background response was not started within {2 * self.queued_timeout:g} s of being queued."
        for response_id in given_up:
            if self.store.background.end(response_id, "failed", events.failed(message), only_queued=True):
                log.warning("background response %s failed: never started", response_id)

    def follow(self, response_id: str, after: int) -> Reply:
        stop = threading.Event()
        return Reply(200, {}, stream=self._follow(response_id, after, stop), abort=stop.set)

    def _follow(self, response_id: str, after: int, stop: threading.Event) -> Iterator[sse.Event]:
        """Events after ``after`` as SSE frames, from the store, until the closing one."""
        last = after
        while not stop.is_set():
            try:
                rows = self.store.background.events_after(response_id, last, _PAGE)
            except StoreUnavailable as exc:
                yield error_event(last + 1, exc)
                return
            for seq, kind, body in rows:
                yield sse.Event(kind, body, events.frame(kind, body))
                last = seq
                if kind in TERMINAL_EVENTS:
                    return
            if len(rows) == _PAGE:
                continue
            progress = self.watch.wait(response_id, last, stop)
            if progress is None:
                return  # deleted
            if progress.last_seq > last:
                continue
            if not progress.live:
                return
            if progress.expired(time.time()):
                self.expire(response_id)


class Watch:
    """Wakes the streams a process follows when their runs move: one store query per interval for all of
    them, made by one thread (a greenlet under gevent) that runs only while someone follows.
    """

    def __init__(self, store: Store, interval: float = FOLLOW_INTERVAL):
        self._store = store
        self._interval = interval
        self._lock = threading.Lock()
        self._waiters: dict[str, list[tuple[int, threading.Event]]] = {}
        self._latest: dict[str, RunState | None] = {}
        self._running = False

    def wait(self, response_id: str, after: int, stop: threading.Event, timeout: float = 1.0) -> RunState | None:
        """The run's state once it has events after ``after``, has ended, has an expired lease, or after
        ``timeout``; None when the run is gone.
        """
        woken = threading.Event()
        with self._lock:
            self._waiters.setdefault(response_id, []).append((after, woken))
            if not self._running:
                self._running = True
                threading.Thread(target=self._loop, name="background-watch", daemon=True).start()
        try:
            woken.wait(timeout)
        finally:
            with self._lock:
                waiting = self._waiters.get(response_id, [])
                if (after, woken) in waiting:
                    waiting.remove((after, woken))
                if not waiting:
                    self._waiters.pop(response_id, None)
        if stop.is_set():
            return None
        with self._lock:
            if response_id in self._latest:
                return self._latest[response_id]
        return self._store.background.state(response_id)

    def _loop(self) -> None:
        while True:
            with self._lock:
                ids = list(self._waiters)
                if not ids:
                    self._running = False
                    self._latest.clear()
                    return
            try:
                found = self._store.background.progress(ids)
            except StoreUnavailable:
                time.sleep(self._interval * 10)
                continue
            now = time.time()
            with self._lock:
                for response_id in ids:
                    row = found.get(response_id)
                    state = RunState(response_id, "", row[1], None, row[2], row[0], None) if row is not None else None
                    self._latest[response_id] = state
                    for after, woken in self._waiters.get(response_id, []):
                        if state is None or state.last_seq > after or not state.live or state.expired(now):
                            woken.set()
            time.sleep(self._interval)


_MCP_SECRETS = ("headers", "authorization")


def _mcp_secrets_out(body: dict) -> tuple[dict, dict[str, dict]]:
    """``body`` without its mcp tools' secrets, and those secrets by the tool's position."""
    tools = body.get("tools")
    if not isinstance(tools, list):
        return body, {}
    secrets, kept = {}, []
    for position, tool in enumerate(tools):
        if isinstance(tool, dict) and tool.get("type") == "mcp" and any(k in tool for k in _MCP_SECRETS):
            secrets[str(position)] = {k: tool[k] for k in _MCP_SECRETS if k in tool}
            tool = {k: v for k, v in tool.items() if k not in _MCP_SECRETS}
        kept.append(tool)
    return ({**body, "tools": kept}, secrets) if secrets else (body, {})


def _mcp_secrets_in(body: dict, secrets: dict[str, dict]) -> dict:
    tools = list(body.get("tools") or [])
    for position, fields in secrets.items():
        tools[int(position)] = {**tools[int(position)], **fields}
    return {**body, "tools": tools}

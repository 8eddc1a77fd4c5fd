"""A consumer process: takes queued background responses off the task queue and runs each through the relay,
as any transport does, storing its events as they come; keeps the leases of its runs and stops those
cancelled elsewhere; ends ``failed`` the runs of consumers that died.

Run by ``gateway worker``, or started by gunicorn's master (``supervisor``). gevent is patched first, by
the command line that starts it (``supervisor.WORKER``): Huey's greenlet workers each hold one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

import orjson
from werkzeug.datastructures import Headers

from .. import pipeline
from ..auth import Caller
from ..call import Call
from ..errors import GatewayError, StoreUnavailable
from ..observe import Trace
from ..services import Services
from ..sse import TERMINAL_EVENTS
from ..store.background import Claimed
from . import events

log = logging.getLogger("gateway")

# Events are written in batches: at most this many, or this old (the first one of a run at once).
BATCH_EVENTS = 64
FLUSH_INTERVAL = 0.05
# How often a consumer looks for cancels of its runs (a read), and flushes events a quiet provider left.
CHECK_INTERVAL = 0.2
# The queue reader's poll of a SQLite queue; a greenlet waiting for its turn takes it after IDLE_WAIT all
# the same, so that a reader that died (a bug, not a path) does not leave the queue unread.
POLL_INTERVAL = 0.05
IDLE_WAIT = 30.0
STOPPED_MESSAGE = "The gateway's background consumer stopped before the run finished."


class Runner:
    """One consumer process's runs: claims them, runs them, and beats for them."""

    def __init__(self, svc: Services, parent: int | None = None):
        self.svc = svc
        self.store = svc.store.background
        self.lease = svc.background.lease_timeout
        self.owner = f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runs: dict[str, Run] = {}
        self.parent = parent
        self.stopping = threading.Event()

    def lease_until(self) -> float:
        return time.time() + self.lease

    def execute(self, message_id: str) -> None:
        """The queue's job: run one queued response to its end (nothing, when none is queued any more). The
        store chooses which (see ``BackgroundStore.claim``): the message's own run, or a fairer one.
        """
        claimed = self.store.claim(message_id, self.owner, self.lease_until())
        if claimed is None:
            return
        response_id = claimed.response_id
        run = Run(self, claimed)
        self.runs[response_id] = run
        try:
            run.go()
        except BaseException:
            # Interrupted (the consumer stopping past its grace time) or a bug: the run must not stay live.
            log.exception("background response %s interrupted", response_id)
            run.fail(STOPPED_MESSAGE)
            raise
        finally:
            self.runs.pop(response_id, None)

    # ------------------------------------------------------------------ the beat
    def start(self) -> None:
        threading.Thread(target=self._beat, name="background-beat", daemon=True).start()

    def _beat(self) -> None:
        renewed = swept = time.monotonic()
        while not self.stopping.wait(CHECK_INTERVAL):
            now = time.monotonic()
            try:
                ids = list(self.runs)
                if ids and now - renewed >= self.lease / 4:
                    lost = self.store.renew(self.owner, ids, self.lease_until())
                    renewed = now
                else:
                    lost = self.store.lost(self.owner, ids)
                for response_id in lost:
                    run = self.runs.get(response_id)
                    if run is not None:
                        run.stop()
                for run in list(self.runs.values()):
                    run.flush(due_only=True)
                if now - swept >= self.lease / 2:
                    swept = now
                    for response_id in self.store.expired(time.time()):
                        self.svc.background.expire(response_id)
                    self.svc.background.sweep_queued(time.time())
            except StoreUnavailable:
                log.warning("background consumer %s cannot reach the store", self.owner)
            except Exception:
                log.exception("background consumer beat failed")
            if self.parent is not None and os.getppid() != self.parent:
                log.warning("background consumer %s: its gunicorn master is gone; stopping", self.owner)
                os.kill(os.getpid(), signal.SIGTERM)
                self.parent = None


class Run:
    """One background response being run: where the pipeline's events and final record go.

    The pipeline hands the final response to ``take`` (its sink) just before the stream's closing event; the
    closing event then commits both, with the events still unwritten, in one transaction.
    """

    def __init__(self, runner: Runner, claimed: Claimed):
        self.runner = runner
        self.store = runner.store
        self.response_id = claimed.response_id
        self.tenant = claimed.tenant
        self.job = claimed.job
        self.seq = claimed.last_seq
        self.pending: list[dict] = []
        self.flushed = 0.0
        self.writes = 0  # store transactions that wrote its events (batching, measured by bench/background.py)
        self.staged: tuple[dict, list[dict], str | None, str, Any] | None = None
        self.done = False  # ended: by its closing event, a failure, or a stop
        self._abort: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the pipeline's side
    def take(self, response: dict, done: Any) -> None:
        """The pipeline's sink: the final record, committed with the stream's last events (``end``)."""
        self.staged = (response, done.input_items, done.conversation, done.provider, done.cost)

    # ------------------------------------------------------------------ running
    def go(self) -> None:
        svc = self.runner.svc
        try:
            job = svc.background.open_job(self.response_id, self.job)
        except Exception:  # a job sealed under another key (the store's secret changed): it cannot run
            self.fail("The background job could not be read by this gateway.")
            return
        caller = self._caller(job.gateway_key, job.provider_key)
        if caller is None:
            self.fail(f"The gateway key '{job.gateway_key}' that created this response is no longer configured.")
            return
        trace = Trace(trace_id=self.response_id, method="POST", path="background")
        started = time.monotonic()
        try:
            reply, _ = pipeline.create(svc, Call(caller, Headers(job.headers), job.body, trace, keeper=self))
        except StoreUnavailable:
            log.warning("background response %s: store unavailable; its lease will run out", self.response_id)
            return
        except GatewayError as err:
            self.fail(err.message)
            return
        if reply.stream is None:
            if reply.status >= 400:
                self.fail(_error_message(reply.body, reply.status))
            else:
                self._close(None)
            return
        self._abort = reply.abort
        stream = reply.stream
        try:
            for event in stream:
                payload = event.json()
                if payload is not None:
                    self.add(payload)
                if self.done:
                    break
        except GatewayError as err:
            self.fail(err.message)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        if not self.done:
            self._close(None)
        log.info(
            "background response %s ended after %.1f s (%d events in %d writes)",
            self.response_id,
            time.monotonic() - started,
            self.seq + 1,
            self.writes,
        )

    def _caller(self, gateway_key: str | None, provider_key: str | None) -> Caller | None:
        if gateway_key is not None:
            return self.runner.svc.auth.gateway_caller(gateway_key)
        return Caller(tenant=self.tenant, provider_key=provider_key)

    def add(self, payload: dict) -> None:
        """One event of the relay's stream: numbered after the stored ones, and written in a batch."""
        kind = payload.get("type")
        if self.done or kind == "response.created":  # created was stored when the response was queued
            return
        self.seq += 1
        payload["sequence_number"] = self.seq
        if kind in TERMINAL_EVENTS:
            self._close(payload)
            return
        self.pending.append(payload)
        if len(self.pending) >= BATCH_EVENTS or time.monotonic() - self.flushed >= FLUSH_INTERVAL:
            self.flush()

    def flush(self, due_only: bool = False) -> None:
        if due_only and time.monotonic() - self.flushed < FLUSH_INTERVAL:
            return
        with self._lock:
            if self.done or not self.pending:
                return
            batch, self.pending = self.pending, []
            try:
                kept = self.store.append(self.response_id, self.runner.owner, batch, self.runner.lease_until())
            except StoreUnavailable:
                self.pending = batch + self.pending  # written with the next batch, in order
                return
            self.flushed = time.monotonic()
            self.writes += 1
        if not kept:
            self.stop()

    def _close(self, closing: dict | None) -> None:
        """The stream's end: commit the staged record with the last events and the closing one."""
        if self.staged is None:
            message = "The provider's stream ended before its final event."
            if closing is not None and closing.get("type") == "error":
                message = str(closing.get("message") or (closing.get("error") or {}).get("message") or message)
            self.fail(message)
            return
        response, input_items, conversation, provider, cost = self.staged
        if closing is None:
            self.seq += 1
            closing = {"type": _closing_type(response), "sequence_number": self.seq}
        if closing.get("type") == "error" or "response" in closing:
            # The record is what the stream says: a break the relay recorded as failed ends with its response.
            closing = {
                "type": _closing_type(response),
                "response": response,
                "sequence_number": closing["sequence_number"],
            }
        else:
            closing["response"] = response
        with self._lock:
            if self.done:
                return
            self.done = True
            try:
                kept = self.store.finish(
                    self.response_id,
                    self.runner.owner,
                    [*self.pending, closing],
                    tenant=self.tenant,
                    provider=provider,
                    response=response,
                    input_items=input_items,
                    conversation=conversation,
                    cost=cost,
                )
            except StoreUnavailable:
                log.warning(
                    "background response %s: its end could not be stored; its lease will run out", self.response_id
                )
                return
            self.pending = []
            self.writes += 1
        if not kept:
            log.info("background response %s had already ended (cancelled)", self.response_id)

    def fail(self, message: str) -> None:
        """End the run ``failed`` with its output so far (the events written, then a ``response.failed``)."""
        if self.done:
            return
        self.flush()
        self.done = True
        try:
            self.store.end(self.response_id, "failed", events.failed(message))
        except StoreUnavailable:
            log.warning(
                "background response %s: its failure could not be stored; its lease will run out", self.response_id
            )

    def stop(self) -> None:
        """The run is no longer this consumer's (cancelled, failed by another, deleted): close the provider call."""
        self.done = True
        if self._abort is not None:
            self._abort()


def _closing_type(response: dict) -> str:
    status = response.get("status")
    if status == "incomplete":
        return "response.incomplete"
    if status == "failed":
        return "response.failed"
    return "response.completed"


def _error_message(body: bytes, status: int) -> str:
    try:
        error = orjson.loads(body).get("error") or {}
        return str(error.get("message") or f"The provider answered {status}.")
    except (orjson.JSONDecodeError, AttributeError):
        return f"The provider answered {status}."


def _consumer_class() -> type:
    from collections import deque

    from greenlet import getcurrent
    from huey.consumer import Consumer, Scheduler, Worker
    from huey.exceptions import HueyException

    from .queue import NotAJob, QueueHealth

    health = QueueHealth(log)
    # One greenlet of the process reads the queue at a time (the reader); the others wait until handed the
    # turn. When every idle greenlet polled on its own (100 of them, each at most a second apart), an idle
    # consumer spent 4.7 % of a core on SQLite reads, and a new run was seen by several greenlets at once,
    # which then queued on SQLite's exclusive lock, whose busy handler sleeps in C and so stalls the whole
    # process: a lone run waited 200 ms to be taken.
    reader: Any = None  # the greenlet whose turn it is
    waiting: deque[threading.Event] = deque()
    # Greenlets switch only where they wait, so the turn needs no lock under gevent; it has one all the same
    # (gevent's, uncontended, cheap), so that the class is right with threads too (its tests use threads).
    lock = threading.Lock()

    def hand_over() -> None:
        """The reader took a run: the longest-waiting greenlet reads next, at once (a burst drains in turn)."""
        nonlocal reader
        with lock:
            reader = None
            if waiting:
                waiting.popleft().set()

    class OneReaderWorker(Worker):
        def loop(self, now: Any = None) -> None:
            nonlocal reader
            me = getcurrent()
            with lock:
                if self.stop_flag.is_set():  # set before the stop wakes the waiting, under this lock
                    return
                wake = None
                if reader in (None, me):
                    reader = me
                else:
                    wake = threading.Event()  # gevent's, patched
                    waiting.append(wake)
            if wake is not None:
                try:
                    wake.wait(IDLE_WAIT)
                finally:
                    with lock:
                        if not wake.is_set():  # not handed the turn (timed out, or interrupted): still queued
                            waiting.remove(wake)
                with lock:
                    if self.stop_flag.is_set():
                        return
                    reader = me
            try:
                task = self.huey.dequeue()
            except (NotAJob, HueyException) as exc:  # HueyException: a task name this gateway does not have
                log.warning("background queue: dropped a message that is not a job: %s", exc)
                return
            except Exception as exc:  # the queue's own client errors (redis, sqlite3): it is down
                health.failed(exc)
                self.stop_flag.wait(health.backoff())
                return
            health.ok()
            if task is None:
                if not self.huey.storage.blocking:  # Redis waits in BRPOP; SQLite is polled
                    self.sleep()
                return
            hand_over()
            self.delay = self.default_delay
            try:
                self.huey.execute(task, now)
            except Exception:
                log.exception("background task %s failed", task.id)

    class IdleScheduler(Scheduler):
        """huey's scheduler reads the schedule every second, and logged a traceback each time while the queue
        was down; the gateway's jobs never wait for a time (JobSerializer refuses an eta) and none is
        periodic, so it has nothing to do.
        """

        def loop(self, now: Any = None) -> None:
            self.stop_flag.wait(60)

    class OneReaderConsumer(Consumer):
        worker_class = OneReaderWorker
        scheduler_class = IdleScheduler

        def stop(self, graceful: bool = False) -> None:
            self.stop_flag.set()
            with lock:
                while waiting:
                    waiting.popleft().set()
            super().stop(graceful=graceful)

    return OneReaderConsumer


def main(argv: list[str] | None = None) -> None:
    """``gateway worker``: a Huey consumer of greenlets, each running one background response at a time."""
    Consumer = _consumer_class()  # noqa: N806 - a class

    from .. import create_app
    from ..config import SettingsError, explain

    parser = argparse.ArgumentParser(prog="gateway worker")
    parser.add_argument("--concurrency", type=int, default=0, help="runs held at once (default: the setting)")
    parser.add_argument("--parent", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        app = create_app()
    except SettingsError as err:
        raise SystemExit(f"gateway: cannot start: {explain(err)}") from None
    svc: Services = app.extensions["gateway"]
    runner = Runner(svc, parent=args.parent)
    svc.background.attach(runner)
    logging.getLogger("huey").setLevel(logging.WARNING)
    consumer = Consumer(
        svc.background.queue,
        workers=args.concurrency or svc.background.concurrency,
        worker_type="greenlet",
        periodic=False,
        # The reader polls a SQLite queue (Redis: waits in BRPOP) every 50 ms when idle: a lone run is taken
        # within that, for some 20 cheap reads a second.
        initial_delay=POLL_INTERVAL,
        backoff=1.0,
        max_delay=POLL_INTERVAL,
        # SIGTERM lets running responses finish for graceful_timeout; the rest end failed (see Runner.execute).
        graceful_signal="TERM",
        shutdown_timeout=svc.background.graceful_timeout,
    )
    runner.start()
    log.info(
        "background consumer %s: %d runs at once on %s",
        runner.owner,
        consumer.workers,
        type(svc.background.queue.storage).__name__,
    )
    try:
        consumer.run()
    finally:
        runner.stopping.set()

"""The background consumer's queue reading: one worker of a process reads the queue at a time, and hands the
turn on when it takes a run, so a burst drains through every worker. Huey's thread workers stand in for the
greenlets (the same class; threads need no gevent patching in the test process).
"""

from __future__ import annotations

import threading
import time

import pytest
from huey import SqliteHuey

from gateway.background import consumer as consumer_mod


def _consumer(tmp_path, workers: int):
    huey = SqliteHuey("t", filename=str(tmp_path / "q.sqlite3"), results=False)
    readers: list[int] = []
    dequeue = huey.dequeue

    def counted():
        readers.append(threading.get_ident())
        return dequeue()

    huey.dequeue = counted
    running: set[int] = set()
    most = [0]
    lock = threading.Lock()

    @huey.task()
    def job(n: int) -> None:
        with lock:
            running.add(n)
            most[0] = max(most[0], len(running))
        time.sleep(0.3)
        with lock:
            running.discard(n)

    cls = consumer_mod._consumer_class()
    consumer = cls(
        huey,
        workers=workers,
        worker_type="thread",
        periodic=False,
        initial_delay=consumer_mod.POLL_INTERVAL,
        backoff=1.0,
        max_delay=consumer_mod.POLL_INTERVAL,
        shutdown_timeout=5,
    )
    return consumer, job, readers, most


@pytest.mark.slow
def test_an_idle_consumer_reads_the_queue_from_one_worker(tmp_path):
    consumer, _, readers, _ = _consumer(tmp_path, workers=20)
    consumer.start()
    try:
        time.sleep(1.0)
        idle = list(readers)
    finally:
        consumer.stop(graceful=True)
    # One reader, polling at its interval; each of 20 workers polling on its own would read 20 times as often.
    assert len(set(idle)) == 1, f"{len(set(idle))} workers read an empty queue"
    assert 5 <= len(idle) <= 2.0 / consumer_mod.POLL_INTERVAL, len(idle)


@pytest.mark.slow
def test_a_burst_runs_on_every_worker_and_a_stop_wakes_the_waiting(tmp_path):
    consumer, job, readers, most = _consumer(tmp_path, workers=10)
    consumer.start()
    try:
        time.sleep(0.2)
        for n in range(30):
            job(n)
        deadline = time.monotonic() + 10
        while consumer.huey.pending_count() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert consumer.huey.pending_count() == 0
        time.sleep(0.5)
    finally:
        consumer.stop(graceful=True)
    # Handed on at each take: the burst ran on all ten workers at once, read by as many of them.
    assert most[0] == 10
    assert len(set(readers)) == 10
    # Waiting workers are woken by the stop, not left to their long wait (IDLE_WAIT) past the shutdown timeout.
    assert not [p for _, p in consumer.worker_threads if p.is_alive()]

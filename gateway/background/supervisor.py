"""Background consumers started and kept running by gunicorn's master, so that ``gateway serve`` alone gives
working background mode. Imports nothing of the gateway: the master must not import the HTTP stack.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

log = logging.getLogger("gateway")

# The consumer's command line: gevent patched before anything else is imported (Huey's greenlet workers).
WORKER = "from gevent import monkey; monkey.patch_all(); from gateway.background.consumer import main; main()"


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-c", WORKER, *args]


class Supervisor:
    """``count`` consumer processes, each restarted when it exits (after a pause when it keeps exiting)."""

    def __init__(self, count: int):
        self.count = count
        self._procs: list[subprocess.Popen | None] = [None] * count
        self._stopping = threading.Event()

    def start(self) -> None:
        for i in range(self.count):
            self._procs[i] = self._spawn()
        threading.Thread(target=self._watch, name="background-supervisor", daemon=True).start()

    def _spawn(self) -> subprocess.Popen:
        # The consumer stops itself when this master is gone (killed without running on_exit).
        return subprocess.Popen(worker_command("--parent", str(os.getpid())))

    def _watch(self) -> None:
        started = {i: time.monotonic() for i in range(self.count)}  # by slot: when its consumer last started
        while not self._stopping.wait(1.0):
            for i, proc in enumerate(self._procs):
                # gunicorn's master reaps every child it sees exit; poll() then finds it gone all the same.
                if proc is None or proc.poll() is None or self._stopping.is_set():
                    continue
                quick = time.monotonic() - started.get(i, 0.0) < 5
                log.warning(
                    "background consumer %s exited (status %s); starting another%s",
                    proc.pid,
                    proc.returncode,
                    " in 5 s" if quick else "",
                )
                if quick and self._stopping.wait(5):
                    return
                self._procs[i] = self._spawn()
                started[i] = time.monotonic()

    def replace(self, timeout: float) -> None:
        """New consumers now (a reload's settings), and SIGTERM to the old ones: they finish their running
        responses within ``timeout`` (then SIGKILL), in a thread, so the master goes on meanwhile.
        """
        old = [p for p in self._procs if p is not None and p.poll() is None]
        self._procs = [self._spawn() for _ in range(self.count)]  # the watch restarts these from now on
        threading.Thread(target=_stop, args=(old, timeout), name="background-replaced", daemon=True).start()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None]

    def stop(self, timeout: float) -> None:
        """SIGTERM to every consumer (running responses get ``timeout`` to finish), then SIGKILL."""
        self._stopping.set()
        _stop([p for p in self._procs if p is not None and p.poll() is None], timeout)


def _stop(procs: list[subprocess.Popen], timeout: float) -> None:
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + timeout + 5
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""gunicorn's settings and hooks, taken from the gateway's own; read by gunicorn.conf.py and `gateway serve`.

Everything is checked here, in the master, before any worker forks: a mistake is one line and exit status 2,
not a traceback per worker. Command-line flags still win: gunicorn applies them after this.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from typing import Any

from .config import mark_reload, pin, pinned, runtime_path
from .logs import gunicorn_logconfig, say
from .startup import StartupError, check

# gunicorn's settings from the last good load: a reload (SIGHUP) with broken settings goes on with them.
_last_good: dict[str, Any] | None = None
# Made once per master, kept across reloads (SIGHUP), removed when the master exits.
_made_metrics_dir: str | None = None
# The background consumers this master started (when_ready) and stops (on_exit).
_consumers: Any = None
_consumer_count = 0
_consumer_grace = 30.0


def configure() -> dict[str, Any]:
    """gunicorn's settings as a mapping of its setting names; exits with status 2 when the gateway cannot start.

    The store is not opened here (see startup.py): ``when_ready`` has it checked in a process of its own.
    """
    global _made_metrics_dir, _consumer_count, _consumer_grace, _last_good
    try:
        settings = check(store=False)
    except StartupError as err:
        if _last_good is not None:
            # A reload: the instance keeps serving, its new workers with the settings pinned before.
            fmt = pinned().log_format if pinned() is not None else "text"
            for line in err.lines:
                say(f"gateway: reload refused, still serving the settings loaded before: {line}", fmt)
            return dict(_last_good)
        for line in err.lines:
            print(f"gateway: cannot start: {line}", file=sys.stderr)
        sys.stderr.flush()
        raise SystemExit(err.status) from None

    out: dict[str, Any] = {
        "bind": settings.bind,
        # Chosen by measurement on 2 cores (README, "Benchmarks"), store on:
        #   gevent 3 workers x 1000: 2,198 req/s at c=16, 0.79 ms CPU/req, 1,000 streams held, +4.3 ms first token
        #   gthread 3 workers x 384: 1,708 req/s at c=16, 0.98 ms CPU/req, 1,000 streams asked, +246 ms
        # A greenlet switch is cheaper than handing the GIL between hundreds of threads, and an open stream
        # costs a greenlet, not an OS thread. More processes than cores keeps a core busy while one waits.
        "workers": settings.workers or (os.cpu_count() or 1) + 1,
        "worker_class": settings.worker_class,
        "threads": settings.threads,
        "worker_connections": settings.worker_connections,
        "timeout": settings.worker_timeout,
        "graceful_timeout": settings.graceful_timeout,
        "keepalive": 5,
        # One log line per request is the gateway's own job; gunicorn's access log would repeat it.
        "accesslog": None,
        "errorlog": "-",
        **({"logconfig_dict": gunicorn_logconfig()} if settings.log_format == "json" else {}),
        "child_exit": child_exit,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
        "on_exit": on_exit,
        "when_ready": when_ready,
        "on_reload": reloaded,
    }
    _consumer_count = settings.background_consumers
    _consumer_grace = float(settings.graceful_timeout)
    # gunicorn's default control socket is one path per user (~/.gunicorn/gunicorn.ctl): a second instance on
    # the host replaced the first one's, and stopping it deleted it. This runs in the master, so its pid
    # names this instance.
    if settings.control_socket == "off":
        out["control_socket_disable"] = True
    else:
        out["control_socket"] = settings.control_socket or runtime_path(f"gateway-{os.getpid()}.ctl")

    # Metrics across workers: prometheus_client's multiprocess mode keeps each worker's values in files here.
    # The variable must be set before a worker imports prometheus_client, so it is set in the master, now,
    # and only once the checks have passed, so that a failed start leaves nothing behind.
    if settings.metrics_dir and settings.metrics_dir != _made_metrics_dir:
        # Files left by an earlier run would be counted again.
        for name in os.listdir(settings.metrics_dir):
            os.unlink(os.path.join(settings.metrics_dir, name))
        metrics_dir = settings.metrics_dir
    else:
        if _made_metrics_dir is None:
            _made_metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        metrics_dir = _made_metrics_dir
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    # The workers use these settings as checked, with the metrics directory decided here (workers that read
    # an empty one kept their counts to themselves, and /metrics showed one worker's, or none).
    pin(dataclasses.replace(settings, metrics_dir=metrics_dir))
    _last_good = out
    return dict(out)


def reconfigure(server: Any) -> None:
    """gunicorn's ``on_reload`` where its settings module is not read again (``python:gateway.gunicorn_conf``):
    the gateway's settings are checked and pinned for the new workers, or refused in one line.
    """
    configure()
    reloaded(server)


def reloaded(server: Any) -> None:
    """A reload (SIGHUP), its settings read: the old workers, stopped next, close their WebSockets with 1012
    (service restart) rather than 1001; the background consumers are replaced by ones with the new settings,
    the old ones finishing their running responses within ``graceful_timeout``.
    """
    global _consumers
    mark_reload(os.getpid())
    if _consumers is not None:
        _consumers.count = _consumer_count
        _consumers.replace(_consumer_grace)
        server.log.info("Replaced the background consumers: %s", _consumers.pids())
    elif _consumer_count > 0:
        from .background.supervisor import Supervisor

        _consumers = Supervisor(_consumer_count)
        _consumers.start()
        server.log.info("Started %d background consumer(s): %s", _consumer_count, _consumers.pids())


def child_exit(server: Any, worker: Any) -> None:
    """A worker is gone: drop its live gauges (open streams) so they are not summed in forever."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])


def post_worker_init(worker: Any) -> None:
    """A worker is ready: what it loaded is set aside from the garbage collector, and its responses go out
    head and first body bytes together (see _one_send_response).
    """
    import gc

    from gunicorn.http import wsgi

    # The app, its modules and schemas live as long as the worker: the collector's full passes walked them
    # all, and stalled every request of the worker meanwhile (c=16, store off, 3 workers, ~11 s: 8 full
    # passes, 547 ms in all, the longest 104 ms; frozen: 71 ms in all). Collected first: garbage frozen
    # would never be freed.
    gc.collect()
    gc.freeze()

    if not getattr(wsgi.Response, "one_send", False):
        # gunicorn's workers make responses through this module name (wsgi.create), with no setting to
        # choose the class; HTTP/2 responses are a class of their own and are left as they are.
        wsgi.Response = _one_send_response(wsgi.Response)


def worker_exit(server: Any, worker: Any) -> None:
    """A worker has logged its last line and is about to exit: its logging lock is let go.

    As the interpreter tears its modules down, logging's handlers are collected and each one's weakref
    callback takes that lock, a gevent lock by now, whose module is already half gone: every stop printed
    three "Exception ignored in: _removeHandlerRef" tracebacks. logging skips the lock when it is None.
    """
    import logging

    logging._lock = None  # type: ignore[attr-defined]


def _one_send_response(base: type) -> type:
    from .greenlets import send_all

    class OneSendResponse(base):  # type: ignore[misc, valid-type]
        """gunicorn's response, sending its head with the first body bytes, and each write with one plain
        send (``send_all``): a plain reply was two sends, each through gevent's sendall, which asks the
        kernel for the socket's buffer size first (strace, per relayed request: 3 sends and 2 getsockopt
        -> 2 sends and none, the other being the provider call's).
        """

        one_send = True

        def write(self, arg: bytes) -> None:
            if self.headers_sent or not isinstance(arg, bytes):  # gunicorn's own TypeError, after the head
                super().write(arg)
                return
            sock, held = self.sock, _Held()
            self.sock = held
            try:
                super().write(arg)
            finally:
                self.sock = sock
            if held.parts:
                send_all(sock, b"".join(held.parts))

        def _emit_body(self, data: bytes) -> None:
            if self.chunked:
                data = b"%X\r\n%s\r\n" % (len(data), data)
            send_all(self.sock, data)

    return OneSendResponse


class _Held:
    """Stands in for the client's socket while gunicorn writes a head and a body: keeps what it sends."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.parts.append(data)

    def send(self, data: bytes) -> int:
        self.parts.append(data)
        return len(data)


def when_ready(server: Any) -> None:
    """The master is listening: check the store and queue in a process of their own (one line when they cannot
    be used; the schema made once, before the first request), start the background consumers
    (``background_consumers``) and watch them.
    """
    global _consumers
    import subprocess

    from .background.supervisor import Supervisor

    # Not waited for: the master's loop reaps it as it reaps any child that is not a worker.
    subprocess.Popen([sys.executable, "-m", "gateway.startup"])

    if _consumers is None and _consumer_count > 0:
        _consumers = Supervisor(_consumer_count)
        _consumers.start()
        server.log.info("Started %d background consumer(s): %s", _consumer_count, _consumers.pids())


def on_exit(server: Any) -> None:
    """The master is leaving (a stop, or workers that failed to boot): stop the background consumers (their
    running responses get graceful_timeout), and remove the metrics directory it made.
    """
    if _consumers is not None:
        _consumers.stop(_consumer_grace)
    if _made_metrics_dir is not None:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)


def _server_class() -> type:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        """gunicorn run from ``gateway serve``: these settings, then the command's flags."""

        def __init__(self, *, bind: str | None = None, port: int | None = None, workers: int | None = None):
            self._flags = {"bind": bind, "port": port, "workers": workers}
            super().__init__(prog="gateway serve")

        def load_config(self) -> None:
            # Called again on SIGHUP: the settings are read and checked anew, as gunicorn.conf.py is.
            values = configure()
            if self._flags["bind"]:
                values["bind"] = self._flags["bind"]
            elif self._flags["port"] is not None:
                host = values["bind"].rsplit(":", 1)[0] if ":" in values["bind"] else values["bind"]
                values["bind"] = f"{host}:{self._flags['port']}"
            if self._flags["workers"]:
                values["workers"] = self._flags["workers"]
            for key, value in values.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            from . import create_app

            return create_app()

    return Server


def __getattr__(name: str) -> Any:
    # gunicorn is imported only by the command that runs it, not by everything that imports this module.
    if name == "Server":
        return _server_class()
    raise AttributeError(name)

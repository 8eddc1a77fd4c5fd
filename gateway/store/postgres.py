"""PostgreSQL connections whose every wait ends by a deadline, and yields to other greenlets meanwhile.

A frozen server (SIGSTOP, a stalled disk, a hung VM) still has a kernel that acknowledges packets, so
neither TCP_USER_TIMEOUT nor keepalives notice it, and the server-side ``statement_timeout`` never fires:
only the client can give up. psycopg waits on the socket with the function it picked when first imported,
its C one unless ``select`` was already patched by gevent, which holds the whole worker until the server
answers. Here each wait goes through a function chosen per call (cooperative under gevent) and ends at the
store call's deadline (``deadline()``) or ``max_wait``, then the connection is closed so that the pool
drops it, and the caller sees an ``OperationalError`` like any other lost connection.

psycopg is imported only when a connection is made: gunicorn's master, which never opens the store, must
not import it before gevent patches its workers.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from .. import greenlets

# When the current store call must have its answer (time.monotonic()), or None outside a store call.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("store_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every database wait inside this block ends within ``seconds`` from now (an earlier bound stays)."""
    at = time.monotonic() + seconds
    outer = _deadline.get()
    token = _deadline.set(at if outer is None else min(outer, at))
    try:
        yield
    finally:
        _deadline.reset(token)


def set_deadline(at: float) -> contextvars.Token:
    """``deadline()`` without a context manager's cost, for the store's hot path: ``at`` (time.monotonic())
    or an earlier bound already set; give the token to ``reset_deadline`` after the call.
    """
    outer = _deadline.get()
    return _deadline.set(at if outer is None or at < outer else outer)


def reset_deadline(token: contextvars.Token) -> None:
    _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current deadline (never below 0), or None outside any ``deadline()``."""
    at = _deadline.get()
    return None if at is None else max(0.0, at - time.monotonic())


def _left(max_wait: float) -> float:
    at = _deadline.get()
    if at is None:
        return max_wait
    return max(0.0, min(max_wait, at - time.monotonic()))


def connect_listener(max_wait: float) -> Callable[..., Any]:
    """A SQLAlchemy ``do_connect`` listener making bounded connections (see the module's docstring)."""
    connection_class = _connection_class(max_wait)

    def do_connect(_dialect: Any, _record: Any, cargs: tuple, cparams: dict) -> Any:
        from psycopg import errors

        left = _left(max_wait)
        if left <= 0:
            raise errors.OperationalError("no time left to connect to the database within the store call's bound")
        # libpq counts connect_timeout in whole seconds, and psycopg takes 2 as its least; under gevent a
        # timer holds the connect to the deadline itself. The engine's own cparams stay as they are.
        params = dict(cparams)
        params["connect_timeout"] = max(2, min(int(params.get("connect_timeout") or 2), math.ceil(left)))
        if not greenlets.active():
            return connection_class.connect(*cargs, **params)
        import gevent

        timer = gevent.Timeout(left)
        timer.start()
        try:
            return connection_class.connect(*cargs, **params)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise errors.OperationalError(f"the database did not accept a connection within {left:.1f} s") from None
        finally:
            timer.close()

    return do_connect


def _connection_class(max_wait: float) -> type:
    import psycopg
    from psycopg import errors, waiting

    class BoundedConnection(psycopg.Connection):
        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            left = _left(max_wait)
            if timeout is not None:
                left = min(left, timeout)
            # Looked up per call: psycopg's own choice was made at import, perhaps before gevent patched
            # select; gevent's select yields to other greenlets while this one waits.
            wait = waiting.wait_select if greenlets.active() else waiting.wait
            try:
                return wait(gen, self.pgconn.socket, interval=interval, timeout=left)
            except errors._WaitTimeout:
                # Half-way through a statement the connection's state is unknown: close it, so that the
                # pool invalidates it instead of handing it out again.
                self.pgconn.finish()
                raise errors.OperationalError(f"the database did not answer within {left:.1f} s") from None

    return BoundedConnection

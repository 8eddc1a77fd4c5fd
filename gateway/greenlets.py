"""Whether this process runs its requests as gevent greenlets (gunicorn's gevent worker patches threading)."""

from __future__ import annotations

import sys
from typing import Any


def active() -> bool:
    """True when gevent has patched threading: a thread-local is then per greenlet, a lock is a greenlet's,
    and gevent's own primitives are the cheap ones.
    """
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def send_all(sock: Any, data: bytes) -> None:
    """``sock.sendall(data)``, trying one plain send first.

    gevent's sendall asks the kernel for the socket's send buffer size on every call (a system call of its
    own) and slices the data in Python; a request or a response head fits one send, which its ``send``
    makes with one call into the C socket, waiting (within the socket's timeout) only when the buffer is
    full. The stdlib socket's send behaves the same under threads.
    """
    sent = sock.send(data)
    if sent < len(data):
        sock.sendall(memoryview(data)[sent:])

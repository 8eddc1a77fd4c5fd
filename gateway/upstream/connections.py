"""urllib3 connections and pools that know whether a pooled socket is still alive before it is reused."""

from __future__ import annotations

import functools
import select
import socket
from typing import Any

import urllib3

from .. import greenlets


def _readable_now(sock: socket.socket) -> bool:
    """urllib3's ``wait_for_read(sock, timeout=0)``, with the poll gevent has not patched."""
    poller = _unpatched_poll()()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


@functools.cache
def _unpatched_poll() -> Any:
    from gevent import monkey

    return monkey.get_original("select", "poll")


class _Connection:
    """What the gateway changes in urllib3's connections (mixed into both, HTTP and HTTPS).

    A request's head is sent with its body in one send, where http.client sends them apart: two system
    calls, and two packets (urllib3 sets TCP_NODELAY) that wake the provider twice. The head is held from
    ``endheaders`` until the first piece of body, or until the response is awaited (a request without a
    body). Bytes go by ``greenlets.send_all``, without gevent's sendall.
    """

    _head: bytes | None = None
    _holding = False

    def putrequest(self, *args: Any, **kwargs: Any) -> None:
        self._head = None
        super().putrequest(*args, **kwargs)  # type: ignore[misc]

    def endheaders(self, message_body: Any = None, *, encode_chunked: bool = False) -> None:
        if self.sock is None:  # type: ignore[attr-defined]
            # Connect here, as http.client's first send would: a held head must not move the connect (and
            # its timeout and errors) into getresponse.
            self.connect()  # type: ignore[attr-defined]
        self._holding = message_body is None
        try:
            super().endheaders(message_body, encode_chunked=encode_chunked)  # type: ignore[misc]
        finally:
            self._holding = False

    def send(self, data: Any) -> None:
        if self._holding and isinstance(data, bytes):
            self._head = data
            return
        head, self._head = self._head, None
        if head is not None:
            if isinstance(data, bytes | bytearray):
                data = head + data
            else:
                self._send(head)
        self._send(data)

    def getresponse(self) -> Any:
        head, self._head = self._head, None
        if head is not None:
            self._send(head)
        return super().getresponse()  # type: ignore[misc]

    def _send(self, data: Any) -> None:
        # Bytes on an open socket go by send_all (one plain send, not gevent's sendall); the rest (file-like
        # or iterable bodies) by http.client, as before.
        sock = self.sock  # type: ignore[attr-defined]
        if sock is not None and isinstance(data, bytes | bytearray) and not self.debuglevel:  # type: ignore[attr-defined]
            greenlets.send_all(sock, data)
        else:
            super().send(data)  # type: ignore[misc]


class _GeventLiveness:
    """Under gevent, a pooled connection's liveness is checked with the unpatched poll (see ``_Adapter``)."""

    @property
    def is_connected(self) -> bool:
        sock = self.sock  # type: ignore[attr-defined]
        return sock is not None and not _readable_now(sock)


class _HTTPConnection(_Connection, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Connection, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _GeventHTTPConnection(_GeventLiveness, _HTTPConnection):
    pass


class _GeventHTTPSConnection(_GeventLiveness, _HTTPSConnection):
    pass


class _GeventHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GeventHTTPConnection


class _GeventHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GeventHTTPSConnection

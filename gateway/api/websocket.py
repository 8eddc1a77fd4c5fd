"""WebSocket mode on /v1/responses: a client transport into the same ``pipeline.create`` as POST /v1/responses.

A client opens one socket (``Upgrade: websocket``, the same auth and routing headers) and sends
``{"type": "response.create", ...}`` frames, the create body's fields beside ``type``; each turn's events come
back one JSON text frame each, in order. Turns run one after another: a ``response.create`` sent while one
runs waits its turn (the API processes the requests of one stream FIFO). This module only converts frames
to plain values and back; providers stay on HTTP.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

import orjson
import simple_websocket
from flask import Response, g, request

from .. import pipeline, sse
from ..auth import Caller
from ..call import Call
from ..config import reloading
from ..errors import INTERNAL_ERROR, GatewayError, InvalidRequest, note_error
from ..memory import ConnectionMemory
from ..observe import Trace
from ..reply import Reply
from ..schemas import json_object, validate
from ..schemas.responses import CreateResponseSchema
from ..services import Services, current_services
from . import _TRACE_ID, _observed
from .v1 import V1Blueprint

log = logging.getLogger("gateway")

bp = V1Blueprint("websocket", __name__)

_create_schema = CreateResponseSchema()

# Fields of a response.create frame that belong to the socket, not to the create body.
_ENVELOPE = ("type", "generate", "stream_id")
# Client events of the API that this gateway does not offer: answered with an error event, the socket stays.
_UNSUPPORTED = {
    "response.steer": "Steering a running response (response.steer) is not supported by this gateway; "
    "send the input with the next response.create.",
}
# RFC 6455 close codes.
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
SERVICE_RESTART = 1012  # a reload (SIGHUP): the gateway comes back at once, with new settings
POLICY_VIOLATION = 1008
# Frames beyond max_body_bytes are answered with an error event, as long as they fit in this many times it;
# a larger one closes the socket (1009, message too big): the whole frame is held in memory to be read.
_HARD_LIMIT_FACTOR = 2
# response.create frames waiting behind a running turn; a client that sends more (or more bytes than one
# request may hold, max_body_bytes) gets an error event and is closed (1008), while the turn still runs.
MAX_QUEUED_FRAMES = 32


class _BoundedServer(simple_websocket.Server):
    """simple-websocket's server with its receive buffer bounded while a turn runs: its reader thread would
    otherwise queue every frame a client sends, however many, until the turn ends.
    """

    queued_bytes_max = 0  # set per socket: max_body_bytes

    def __init__(self, *args: Any, **kwargs: Any):
        # The turn's thread sends while the reader may refuse: wsproto (and its deflate state) takes one at a time.
        self._sending = threading.Lock()
        super().__init__(*args, **kwargs)

    def send(self, data: Any) -> None:
        with self._sending:
            super().send(data)

    def close(self, reason: Any = None, message: Any = None) -> None:
        with self._sending:
            super().close(reason, message)

    def _handle_events(self) -> bool:
        keep_going = super()._handle_events()
        buffered = self.input_buffer
        if keep_going and len(buffered) > MAX_QUEUED_FRAMES:
            return self._refuse(f"more than {MAX_QUEUED_FRAMES} frames queued behind the running turn")
        if keep_going and len(buffered) > 1 and sum(len(f) for f in buffered) > self.queued_bytes_max:
            return self._refuse(f"frames queued behind the running turn exceed {self.queued_bytes_max} bytes")
        return keep_going

    def _refuse(self, why: str) -> bool:
        event = {
            "type": "error",
            "sequence_number": 0,
            "code": "too_many_frames",
            "message": f"Closing the socket: {why}. Wait for each response before sending the next.",
            "param": None,
            "status": 429,
            "error": {"type": "invalid_request_error", "code": "too_many_frames", "message": why, "param": None},
        }
        with contextlib.suppress(OSError, simple_websocket.ConnectionClosed):
            self.send(orjson.dumps(event).decode())
            self.close(reason=POLICY_VIOLATION, message=why[:120])
        self.input_buffer.clear()  # nothing queued is answered: its memory goes now
        self.connected = False
        self.event.set()
        self._linger()
        return False

    def _linger(self, seconds: float = 2.0, most: int = 64 * 1024 * 1024) -> None:
        """Read and drop what the client still sends, for a moment, before the socket is closed: a close with
        unread data makes the kernel reset the connection, and the client would lose the error event and
        the close frame still in its receive buffer.
        """
        deadline = time.monotonic() + seconds
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
            while most > 0 and (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                data = self.sock.recv(65536)
                if not data:
                    break  # the client closed its side
                most -= len(data)


class _Sockets:
    """The WebSockets open in this worker, by tenant: admitted before the upgrade, released when they close."""

    def __init__(self) -> None:
        self.total = 0
        self.by_tenant: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def admit(self, tenant: str, settings: Any) -> None:
        """Count one more socket for ``tenant``; raises GatewayError (429, 503) when it may not open."""
        capacity = settings.threads if settings.worker_class == "gthread" else settings.worker_connections
        reserve = settings.websocket_reserve if settings.websocket_reserve >= 0 else max(1, capacity // 10)
        room = capacity - reserve
        with self._lock:
            if self.by_tenant[tenant] >= settings.websocket_max_per_key:
                raise GatewayError(
                    f"This key holds {settings.websocket_max_per_key} WebSockets on this server already "
                    "(websocket_max_per_key); close one, or use POST /v1/responses.",
                    status=429,
                    code="too_many_websockets",
                    headers={"Retry-After": "1"},
                )
            if self.total >= room:
                raise GatewayError(
                    "This server has no room for another WebSocket (the rest is kept for plain requests: "
                    "websocket_reserve); retry, or use POST /v1/responses.",
                    status=503,
                    code="websocket_capacity",
                    headers={"Retry-After": "1"},
                )
            self.total += 1
            self.by_tenant[tenant] += 1

    def release(self, tenant: str) -> None:
        with self._lock:
            self.total -= 1
            self.by_tenant[tenant] -= 1
            if self.by_tenant[tenant] <= 0:
                del self.by_tenant[tenant]


_sockets = _Sockets()


class _WholeWrites:
    """The client's socket as simple-websocket is given it: each write whole, and one at a time.

    simple-websocket writes a frame with one ``socket.send``, which under gevent may take only part of a
    large frame; and its reader (pings, pongs, the close handshake) writes beside the turn's frames.
    """

    def __init__(self, sock: Any):
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Upgraded(Response):
    """What a view returns once its request has become a WebSocket and the socket is closed: nothing to send.

    Each server ends such a request its own way (as flask-sock does it): gunicorn by a StopIteration, which
    closes the connection without writing a response.
    """

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if self.mode == "gunicorn":
            raise StopIteration()
        if self.mode == "werkzeug":
            return super().__call__(environ, start_response)
        return []


@bp.route("/responses", websocket=True)
def responses_socket() -> Response:
    """GET /v1/responses with ``Upgrade: websocket``. Auth and routing headers are checked before the upgrade:
    a bad key or an unknown provider is an ordinary HTTP error, as for POST.
    """
    svc = current_services()
    caller = svc.auth.caller(request.headers)
    svc.router.targets(request.headers, caller)
    limit = svc.settings.max_body_bytes
    environ = dict(request.environ)
    for key in ("werkzeug.socket", "gunicorn.socket"):
        if key in environ:
            environ[key] = _WholeWrites(environ[key])
            break
    _sockets.admit(caller.tenant, svc.settings)
    try:
        ws = _BoundedServer(
            environ,
            max_message_size=limit * _HARD_LIMIT_FACTOR,
            ping_interval=svc.settings.stream_heartbeat_interval or None,
        )
        ws.queued_bytes_max = limit
        incoming = request.headers.get("x-portkey-trace-id", "")
        trace_prefix = incoming if _TRACE_ID.match(incoming) else ""
        Connection(svc, caller, request.headers, ws, trace_prefix=trace_prefix).run()
    finally:
        _sockets.release(caller.tenant)
    # Each turn had its own access line; the upgrade itself has none.
    g.pop("trace", None)
    return _Upgraded(ws.mode)


class Connection:
    """One socket: its caller, its memory of responses, and its turns, one at a time."""

    def __init__(self, svc: Services, caller: Caller, headers: Mapping[str, str], ws: Any, *, trace_prefix: str = ""):
        self.svc = svc
        self.caller = caller
        self.headers = headers
        self.ws = ws
        self.memory = ConnectionMemory(caller.tenant, max_bytes=svc.settings.max_body_bytes)
        self.trace_prefix = trace_prefix
        self.turns = 0
        self._lock = threading.Lock()
        self._busy = False
        self._closed = False
        self._draining = False
        self._abort: Any = None  # the running turn's Reply.abort

    # ------------------------------------------------------------------ the socket's life
    def run(self) -> None:
        """Serve frames until the client leaves, the socket idles out, or the worker shuts down."""
        _shutdown.open.add(self)
        threading.Thread(target=self._watch, name="websocket-watch", daemon=True).start()
        idle = self.svc.settings.websocket_idle_timeout or None
        try:
            if _shutdown.draining:
                self.drain()
            while not self._closed:
                message = self.ws.receive(timeout=idle)
                if message is None:
                    self._close(NORMAL_CLOSURE, f"idle for {idle:g} s (websocket_idle_timeout)")
                    break
                with self._lock:
                    if self._closed:
                        break
                    self._busy = True
                try:
                    self._frame(message)
                finally:
                    with self._lock:
                        self._busy = False
                        draining = self._draining
                if draining:
                    self._close(*_shutdown.closing())
        except simple_websocket.ConnectionClosed:
            pass
        finally:
            _shutdown.open.discard(self)
            if self.ws.connected:
                self._close(NORMAL_CLOSURE, "")
            # Let the client's answer to the close frame be read before the server closes the connection.
            self.ws.thread.join(2)

    def drain(self) -> None:
        """Shutdown: close now when idle (1001, going away); a running turn finishes first, then the same."""
        with self._lock:
            self._draining = True
            if self._busy or self._closed:
                return
        self._close(*_shutdown.closing())

    def _close(self, code: int, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(simple_websocket.ConnectionClosed, OSError):  # the client may be gone
            self.ws.close(reason=code, message=reason)
        self.ws.event.set()  # wakes a receive() that waits for the next frame

    def _watch(self) -> None:
        """The client went away (the socket's reader ended): break the running turn's provider connection now,
        rather than when the provider next speaks.
        """
        self.ws.thread.join()
        abort = self._abort
        if abort is not None:
            abort()

    # ------------------------------------------------------------------ frames
    def _frame(self, message: str | bytes) -> None:
        """One client frame: a turn's events, or one error event. Never raises for what the client sent."""
        self.turns += 1
        trace_id = f"{self.trace_prefix}:{self.turns}" if self.trace_prefix else uuid.uuid4().hex
        trace = Trace(trace_id=trace_id, method="WEBSOCKET", path="/v1/responses", tenant=self.caller.tenant)
        stream_id = None
        frame: dict = {}
        try:
            frame = self._parse(message)
            stream_id = frame.get("stream_id") if isinstance(frame.get("stream_id"), str) else None
            if not self._create(frame, trace, stream_id):
                self._evict(frame)
        except GatewayError as err:
            trace.status = err.status
            note_error(trace, err)
            self._evict(frame)
            self._send_error(err.status, err.body()["error"], err.headers, stream_id)
        except simple_websocket.ConnectionClosed:
            trace.status = trace.status or 499  # the client closed the connection mid-turn
            raise
        except Exception:
            log.exception("unhandled error on a WebSocket turn")
            trace.status = 500
            trace.error = "internal_error"
            self._evict(frame)
            self._send_error(500, INTERNAL_ERROR["error"], {}, stream_id)
        finally:
            self.svc.observer.finish(trace)

    def _evict(self, frame: dict) -> None:
        """A turn that failed takes the response it continued out of the connection's memory, as the API does:
        the next continuation from it reads the store, or is previous_response_not_found (store: false).
        """
        previous = frame.get("previous_response_id")
        if isinstance(previous, str):
            self.memory.forget(previous)

    def _parse(self, message: str | bytes) -> dict:
        if isinstance(message, bytes):
            raise InvalidRequest("Frames are JSON text; this one is binary.", code="invalid_frame")
        raw = message.encode()
        limit = self.svc.settings.max_body_bytes
        if len(raw) > limit:
            raise GatewayError(
                f"The frame is larger than {limit} bytes, the gateway's `max_body_bytes` setting.",
                status=413,
                code="request_too_large",
            )
        frame = json_object(raw, "The frame", "A frame must be a JSON object.")
        kind = frame.get("type")
        if kind == "response.create":
            return frame
        if not isinstance(kind, str):
            raise InvalidRequest("A frame needs a `type` string, e.g. response.create.", param="type")
        if kind in _UNSUPPORTED:
            raise InvalidRequest(_UNSUPPORTED[kind], param="type", code="unsupported_event")
        raise InvalidRequest(
            f"Unknown event type '{kind[:64]}'; this endpoint takes response.create.",
            param="type",
            code="unknown_event",
        )

    def _create(self, frame: dict, trace: Trace, stream_id: str | None) -> bool:
        """One turn, its events sent; False when it failed (an error answer, or a stream ending in failure)."""
        generate = frame.get("generate")
        if generate is not None and not isinstance(generate, bool):
            raise InvalidRequest("`generate` must be a boolean.", param="generate", code="invalid_type")
        if "stream_id" in frame and not isinstance(frame["stream_id"], str):
            raise InvalidRequest("`stream_id` must be a string.", param="stream_id", code="invalid_type")
        body = {key: value for key, value in frame.items() if key not in _ENVELOPE}
        validate(_create_schema, body)
        if body.get("background"):
            raise InvalidRequest(
                "background is not supported over WebSocket; use POST /v1/responses.",
                param="background",
                code="unsupported_parameter",
            )
        body["stream"] = True  # implicit on a socket
        trace.model, trace.stream = body.get("model"), True
        if self.svc.observer.log_prompts:
            trace.prompt = {"instructions": body.get("instructions"), "input": body.get("input")}
        # The connection's memory is asked before the store, and given every finished response.
        call = Call(
            self.caller,
            self.headers,
            body,
            trace,
            source=self.memory,
            sinks=(self.memory,),
            generate=generate is not False,
        )
        reply, target = pipeline.create(self.svc, call)
        trace.provider = target.provider.name
        trace.status = reply.status
        if reply.stream is not None:
            return self._events(reply, trace, stream_id)
        if reply.status >= 400:
            error = _error_of(reply)
            trace.error = error.get("code") or error.get("type")
            self._send_error(reply.status, error, reply.headers, stream_id)
            return False
        # A provider that answered a stream request with JSON: its final Response.
        self._send(orjson.dumps({"type": "response.completed", "response": reply.data}).decode(), stream_id)
        return True

    def _events(self, reply: Reply, trace: Trace, stream_id: str | None) -> bool:
        """The turn's SSE events, one text frame each; the provider connection is closed in every case.
        False when the stream ended in failure (``response.failed``, or an ``error`` event).
        """
        stream = reply.stream
        events = _observed(stream, trace)
        self._abort = reply.abort
        last = None
        try:
            if not self.ws.connected:  # left before the turn began: the watcher found no turn to abort
                return True
            for event in events:
                self._send_event(event, stream_id)
                last = event
            # (A provider's stream may name its events only in their data.)
            return last is None or (last.event or (last.json() or {}).get("type")) not in _FAILED
        finally:
            self._abort = None
            events.close()
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    # ------------------------------------------------------------------ sending
    def _send_event(self, event: sse.Event, stream_id: str | None) -> None:
        if stream_id is None:
            self.ws.send(event.data)
        else:
            self.ws.send(orjson.dumps({**(event.json() or {}), "stream_id": stream_id}).decode())

    def _send(self, data: str, stream_id: str | None) -> None:
        if stream_id is not None:
            event = orjson.loads(data)
            event["stream_id"] = stream_id
            data = orjson.dumps(event).decode()
        self.ws.send(data)

    def _send_error(self, status: int, error: dict, headers: Mapping[str, str], stream_id: str | None) -> None:
        """An ``error`` event in the error shape, with the HTTP status the same failure has over POST."""
        # The fields the SDK's ResponseErrorEvent requires (a turn refused before it began numbers it 0),
        # beside the API's own WebSocket shape (status, and the error object).
        event: dict[str, Any] = {
            "type": "error",
            "sequence_number": 0,
            "code": error.get("code"),
            "message": error.get("message") or "",
            "param": error.get("param"),
            "status": status,
            "error": dict(error),
        }
        if headers:
            event["error"]["headers"] = dict(headers)
        if stream_id is not None:
            event["stream_id"] = stream_id
        self.ws.send(orjson.dumps(event).decode())


# The last event of a turn that failed.
_FAILED = frozenset({"response.failed", "error"})


def _error_of(reply: Reply) -> dict:
    """The ``error`` object of a provider's error reply (the relay has put it in the error shape)."""
    try:
        data = orjson.loads(reply.body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return error
    return {"message": "The provider answered with an error.", "type": "server_error", "param": None, "code": None}


class _Shutdown:
    """SIGTERM to a gunicorn worker: every idle socket closes at once with 1001 (going away); one whose turn
    is running closes when the turn has finished. Clients reconnect (the openai SDKs do for 1001).

    gunicorn's workers offer no hook for the start of their graceful shutdown, so the SIGTERM handler the
    worker installed is wrapped (and still runs). Outside gunicorn (no handler installed) nothing is wrapped.
    """

    def __init__(self) -> None:
        self.open: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.draining = False
        self.restart: bool | None = None  # the SIGTERM is a reload's (see closing)
        self._installed = False

    def install(self) -> None:
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return
        self._installed = True
        # Closing sockets writes to them, which a signal handler must not do (under gevent it runs in the
        # event loop and cannot block): it only wakes this thread.
        begun = threading.Event()
        threading.Thread(target=self._drain, args=(begun,), name="websocket-drain", daemon=True).start()

        def on_term(signum: int, frame: Any) -> None:
            self.draining = True
            begun.set()
            previous(signum, frame)

        signal.signal(signal.SIGTERM, on_term)

    def _drain(self, begun: threading.Event) -> None:
        begun.wait()
        self.closing()  # decided now, from the SIGTERM's moment, for every socket closed later
        for connection in list(self.open):
            connection.drain()

    def closing(self) -> tuple[int, str]:
        """1012 when the SIGTERM came from a reload (SIGHUP: the master marks it just before it stops the old
        workers), else 1001: clients reconnect either way, and know from 1012 that the gateway is back at once.
        """
        if self.restart is None:
            self.restart = reloading(os.getppid(), within=15.0)
        if self.restart:
            return SERVICE_RESTART, "the server is reloading its settings"
        return GOING_AWAY, "the server is shutting down"


_shutdown = _Shutdown()


@bp.record_once
def _on_register(state: Any) -> None:
    # create_app runs in the worker once gunicorn has set its signal handlers.
    _shutdown.install()

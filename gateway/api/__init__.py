"""HTTP surface: blueprints and the helpers every view uses."""

from __future__ import annotations

import io
import os
import queue
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, g, request, stream_with_context
from werkzeug.exceptions import RequestEntityTooLarge

from .. import sse
from ..auth import Caller
from ..errors import GatewayError
from ..greenlets import active as greenlets_active
from ..observe import Trace
from ..reply import Reply
from ..schemas import json_object
from ..services import Services, current_services
from ..spend import COST_HEADER, plain

_TRACE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def init_app(app: Flask) -> None:
    from .admin import bp as admin_bp
    from .conversations import bp as conversations_bp
    from .health import bp as health_bp
    from .models import bp as models_bp
    from .responses import bp as responses_bp
    from .websocket import bp as websocket_bp

    app.register_blueprint(health_bp)
    app.register_blueprint(responses_bp)
    app.register_blueprint(websocket_bp)
    app.register_blueprint(models_bp)
    app.register_blueprint(conversations_bp)
    app.register_blueprint(admin_bp)

    @app.before_request
    def _bounded_body() -> None:
        _read_chunked_body(app.config["MAX_CONTENT_LENGTH"])

    @app.before_request
    def _trace() -> None:
        incoming = request.headers.get("x-portkey-trace-id", "")
        # 128 random bits in hex, as uuid4().hex without building a UUID.
        trace_id = incoming if _TRACE_ID.match(incoming) else os.urandom(16).hex()
        # The route, not the path, names the endpoint: ids in paths would make every label unique.
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        g.trace = Trace(trace_id=trace_id, method=request.method, path=rule)

    @app.after_request
    def _finish(resp: Response) -> Response:
        trace = g.get("trace")
        if trace is None:
            return resp
        resp.headers["x-portkey-trace-id"] = trace.trace_id
        status = trace.status = resp.status_code
        if trace.path in _UNOBSERVED:
            return resp
        svc = current_services()
        if status >= 400 and trace.tenant is not None and trace.path in _CALLS and trace.cost_usd is None:
            _refused(svc, trace, resp)
        observer = svc.observer
        # Called when the last byte has gone, or the client went away: for streams that is their real end.
        resp.call_on_close(lambda: observer.finish(trace))
        return resp


# The calls whose refusals are kept beside their usage (the console's traffic): a create, a compaction, a count.
_CALLS = frozenset({"/v1/responses", "/v1/responses/compact", "/v1/responses/input_tokens"})


def _refused(svc: Services, trace: Trace, resp: Response) -> None:
    """A known caller's call that ended in an error with nothing charged: a usage row of kind "error".

    Only a gateway key's, or a call that reached a provider: with provider keys allowed any made-up key is a
    caller, whose junk must not fill the usage table.
    """
    if trace.unpriced or trace.method != "POST":
        return
    tenant = trace.tenant or ""
    if not tenant.startswith("key:") and trace.provider is None:
        return
    code = trace.error
    if code is None:  # a provider's own error, passed on: its code, else its type
        body = resp.get_json(silent=True) if resp.mimetype == "application/json" else None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code = error.get("code") or error.get("type")
    who = tenant[4:] if tenant.startswith("key:") else tenant
    svc.spend.refused(trace, who, resp.status_code, code if isinstance(code, str) else f"http_{resp.status_code}")


def json_body() -> dict:
    """The request body as a JSON object the store can keep. 400/413/415 for anything else."""
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise GatewayError(
            f"Content-Type must be application/json, not {mimetype}.", status=415, code="unsupported_media_type"
        )
    return json_object(request.get_data(cache=False), "The request body", "The request body must be a JSON object.")


def caller_of(svc: Services) -> Caller:
    """The request's caller (401 without a usable key), noted in the request's trace."""
    caller = svc.auth.caller(request.headers)
    g.trace.tenant = caller.tenant
    return caller


def _read_chunked_body(limit: int | None) -> None:
    """A body sent without Content-Length (chunked) is read here, up to the limit: 413 past it.

    Werkzeug would cut such a body at the limit and hand the first part on as if it were whole.
    """
    environ = request.environ
    if limit is None or "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    data = environ["wsgi.input"].read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(data)
    environ["CONTENT_LENGTH"] = str(len(data))
    environ.pop("HTTP_TRANSFER_ENCODING", None)


_UNOBSERVED = frozenset({"/healthz", "/readyz", "/metrics"})


def _observed(stream: Iterator[bytes], trace: Trace) -> Iterator[bytes]:
    observer = current_services().observer
    observer.open_streams.inc()
    try:
        for chunk in stream:
            if trace.first_event_ms is None:
                trace.first_event_ms = (time.perf_counter() - trace.started) * 1000
            yield chunk
    finally:
        observer.open_streams.dec()


HEARTBEAT = b": keep-alive\n\n"
_END = object()
# Chunks the provider's reader may run ahead of the client by, and chunks gathered into one write.
_AHEAD = 64


def _client_left(sock: socket.socket | None) -> bool:
    """True when the client has closed its end (FIN received): a peek at its socket, which never blocks.

    A write alone notices only on the second heartbeat: the first is accepted by the kernel, and only
    the peer's reset to it makes the next one fail.
    """
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _heartbeats(
    stream: Iterator[bytes],
    interval: float,
    abort: Callable[[], None] | None,
    client: socket.socket | None = None,
    primed: bool = False,
) -> Iterator[bytes]:
    """``stream``, with an SSE comment after every ``interval`` seconds in which the provider said nothing.

    Without it a client that leaves while the provider is silent goes unnoticed until the provider speaks
    again (up to the read timeout), and the provider keeps generating, and billing, for nobody. A comment
    is written, the write fails, and the provider connection is broken at once. SDKs skip comments.

    The provider is read by a helper thread (a greenlet under gevent) so that the wait can time out
    without corrupting the read; a bounded queue keeps it from running ahead of a slow client. A ``primed``
    stream's first item, already read, is passed on before the helper starts: through it, the first byte
    waited for two turns of a loaded worker's event loop (1,000 streams: first byte p50 1,008 ms against
    517 ms without heartbeats).
    """
    if primed:
        first = next(stream, _END)
        if first is _END:
            return
        try:
            yield first
        except GeneratorExit:  # the client left: the provider connection is closed with the stream
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            raise
    greenlets = greenlets_active()
    if greenlets:
        # gevent's own queue and a plain greenlet: the stdlib queue and Thread over patched locks cost
        # 95 us a stream of 25 chunks, against 56 us (microbenchmark).
        import gevent.queue

        chunks: Any = gevent.queue.Queue(maxsize=_AHEAD)
    else:
        chunks = queue.Queue(maxsize=_AHEAD)
    stop = threading.Event()

    def pump() -> None:
        try:
            for chunk in stream:
                if stop.is_set():
                    break
                chunks.put(chunk)
        except BaseException as exc:  # handed to the request's side, raised there
            chunks.put(exc)
        finally:
            if stop.is_set():
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            chunks.put(_END)

    if greenlets:
        gevent.spawn(pump)
    else:
        threading.Thread(target=pump, name="sse-pump", daemon=True).start()
    finished = False
    held: Any = None  # the end or a failure, found while gathering chunks: taken next
    try:
        while True:
            if held is not None:
                item, held = held, None
            else:
                try:
                    item = chunks.get(timeout=interval)
                except queue.Empty:
                    if _client_left(client):
                        return
                    yield HEARTBEAT
                    continue
            if item is _END:
                finished = True
                return
            if isinstance(item, BaseException):
                finished = True
                raise item
            # What else the pump has read goes out in the same write: under load events pile up while
            # this side waits its turn, and each write is a system call and a chunk of its own.
            parts = [item]
            while len(parts) < _AHEAD:  # bounded: under threads the pump may keep up with this loop
                try:
                    more = chunks.get_nowait()
                except queue.Empty:
                    break
                if more is _END or isinstance(more, BaseException):
                    held = more
                    break
                parts.append(more)
            yield b"".join(parts)  # one part: that part itself, not a copy
    finally:
        if not finished:
            # The client is gone: break the provider connection, then let the pump run to its end.
            stop.set()
            if abort is not None:
                abort()
            deadline = time.monotonic() + 5
            while held is not _END and time.monotonic() < deadline:
                try:
                    if chunks.get(timeout=max(0.0, deadline - time.monotonic())) is _END:
                        break
                except queue.Empty:
                    break


def to_response(reply: Reply, provider: str) -> Response:
    """A relay Reply -> Flask Response, SSE unbuffered all the way (nginx included)."""
    if reply.stream is not None:
        stream = sse.raw(reply.stream)
        interval = current_services().settings.stream_heartbeat_interval
        if interval > 0:
            # gunicorn names the client's socket in the environ; other servers rely on the write failing.
            client = request.environ.get("gunicorn.socket")
            stream = _heartbeats(stream, interval, reply.abort, client, primed=reply.primed)
        stream = _observed(stream, g.trace)
        resp = Response(stream_with_context(stream), status=reply.status, mimetype="text/event-stream")
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers["X-Accel-Buffering"] = "no"
    else:
        resp = Response(reply.body, status=reply.status, mimetype="application/json")
        cost = g.trace.cost_usd
        if cost is not None and reply.status < 400:  # what the calls made for this answer cost (spend.py)
            resp.headers[COST_HEADER] = plain(cost)
    resp.headers["x-portkey-provider"] = provider
    resp.headers["x-portkey-last-used-option-index"] = "0"
    resp.headers["x-portkey-retry-attempt-count"] = "0"
    resp.headers.update(reply.headers)  # the relay's own marks, where it made them, win
    g.trace.provider = resp.headers["x-portkey-provider"]
    return resp

"""The gunicorn response the gateway's workers use (gateway/gunicorn_config.py): the head goes out with the
first body bytes in one send, plain and chunked (SSE), and what goes on the wire is what gunicorn's own
response writes in more.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi

from gateway.greenlets import send_all
from gateway.gunicorn_config import _one_send_response


class _Socket:
    """Records each send; ``limit`` caps what one plain send takes, as a full send buffer does."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.sends: list[bytes] = []
        self.limit = limit

    def send(self, data: bytes) -> int:
        self.sends.append(bytes(data[: self.limit]))
        return min(len(data), self.limit)

    def sendall(self, data: bytes) -> None:
        self.sends.append(bytes(data))


def _request(method: str = "POST") -> SimpleNamespace:
    return SimpleNamespace(version=(1, 1), method=method, headers=[], should_close=lambda: False, path="/v1/responses")


def _respond(
    cls: type, headers: list[tuple[str, str]], body: list[bytes], method: str = "POST", status: str = "200 OK"
) -> list[bytes]:
    sock = _Socket()
    resp = cls(_request(method), sock, Config())
    resp.start_response(status, headers)
    for part in body:
        resp.write(part)
    resp.close()
    return sock.sends


def _same_but_date(a: bytes, b: bytes) -> bool:
    def strip(raw: bytes) -> bytes:
        return b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Date: "))

    return strip(a) == strip(b)


def test_a_json_reply_is_one_send_with_the_same_bytes():
    headers = [("Content-Type", "application/json"), ("Content-Length", "11")]
    ours = _respond(_one_send_response(wsgi.Response), headers, [b'{"id":"r1"}'])
    theirs = _respond(wsgi.Response, headers, [b'{"id":"r1"}'])
    assert len(ours) == 1 and len(theirs) == 2
    assert _same_but_date(ours[0], b"".join(theirs))
    assert ours[0].endswith(b'\r\n\r\n{"id":"r1"}')


def test_a_stream_sends_its_head_with_the_first_event_then_one_send_per_write():
    headers = [("Content-Type", "text/event-stream")]
    events = [b"data: 1\n\n", b"data: 2\n\n"]
    ours = _respond(_one_send_response(wsgi.Response), headers, events)
    theirs = _respond(wsgi.Response, headers, events)
    assert len(ours) == len(theirs) - 1 == 3  # head+first, second, the closing chunk
    assert _same_but_date(b"".join(ours), b"".join(theirs))
    assert b"Transfer-Encoding: chunked" in ours[0] and ours[0].endswith(b"9\r\ndata: 1\n\n\r\n")


@pytest.mark.parametrize(
    ("method", "status", "headers", "body"),
    [
        ("HEAD", "200 OK", [("Content-Length", "11")], [b'{"id":"r1"}']),  # a head, no body
        ("POST", "204 No Content", [], [b"dropped"]),  # no body allowed
        ("POST", "200 OK", [("Content-Length", "3")], [b"hello", b"more"]),  # cut at its length
        ("POST", "200 OK", [("Content-Type", "text/event-stream")], [b"", b"data: 1\n\n"]),  # an empty first write
        ("POST", "200 OK", [("Content-Length", "0")], []),  # no write at all: the head from close()
    ],
)
def test_the_edge_cases_put_on_the_wire_what_gunicorn_does(method, status, headers, body):
    ours = _respond(_one_send_response(wsgi.Response), headers, body, method, status)
    theirs = _respond(wsgi.Response, headers, body, method, status)
    assert _same_but_date(b"".join(ours), b"".join(theirs))
    assert len(ours) <= len(theirs)


def test_send_all_sends_the_rest_when_one_send_takes_part():
    sock = _Socket(limit=5)
    send_all(sock, b"0123456789abc")
    assert sock.sends == [b"01234", b"56789abc"]
    sock = _Socket()
    send_all(sock, b"whole")
    assert sock.sends == [b"whole"]

"""gateway/upstream.py against real sockets: what goes on the wire, and how a failed connect is named."""

from __future__ import annotations

import socket
import threading

import pytest

from gateway.errors import UpstreamError
from gateway.upstream import Upstream, _origin


def _upstream() -> Upstream:
    return Upstream(connect_timeout=2, read_timeout=5, pool_size=2, trust_env=False, max_response_bytes=1 << 20)


@pytest.fixture
def server():
    """An HTTP/1.1 server answering each request with {} on kept-alive connections; keeps what it read, and
    counts the connections.
    """
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    got: list[bytes] = []
    connections: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            connections.append(conn)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                got.append(head + b"\r\n\r\n" + buf[:length])
                buf = buf[length:]
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", got, connections
    srv.close()


def test_a_request_goes_out_in_one_send_with_its_body(server, monkeypatch):
    url, got, _ = server
    sends: list[bytes] = []

    def counting(real):
        def send(sock, data, *args):
            if not bytes(data).startswith(b"HTTP/1.1 "):  # the server's answers, sent from this process too
                sends.append(bytes(data))
            return real(sock, data, *args)

        return send

    # Either call counts: a request goes by one plain send, and sendall only for what that one left.
    monkeypatch.setattr(socket.socket, "sendall", counting(socket.socket.sendall))
    monkeypatch.setattr(socket.socket, "send", counting(socket.socket.send))
    up = _upstream()
    body = b'{"model": "m", "input": "hi"}'
    resp = up.request("p", "POST", url + "/v1/responses", headers={"X-A": "1"}, body=body)
    assert resp.status == 200 and resp.read() == b"{}"
    assert len(sends) == 1 and sends[0].startswith(b"POST /v1/responses HTTP/1.1\r\n") and sends[0].endswith(body)
    # A request without a body is sent when its answer is awaited, on the same kept-alive connection.
    resp = up.request("p", "GET", url + "/v1/responses/r1", headers={})
    assert resp.status == 200 and resp.read() == b"{}"
    assert len(sends) == 2 and sends[1].startswith(b"GET /v1/responses/r1 HTTP/1.1\r\n")
    assert [g.split(b"\r\n", 1)[0] for g in got] == [b"POST /v1/responses HTTP/1.1", b"GET /v1/responses/r1 HTTP/1.1"]
    assert got[0].endswith(body)
    up.close()


def test_a_provider_s_pool_is_kept_for_all_its_urls_until_the_upstream_closes(server):
    url, got, connections = server
    up = _upstream()
    for path in ("/v1/responses", "/v1/responses/resp_1", "/v1/responses/resp_2/input_items?limit=2"):
        assert up.request("p", "POST", url + path, headers={}, body=b"{}").read() == b"{}"
    assert len(got) == 3 and len(connections) == 1
    adapter = up.session().get_adapter(url)
    assert len(adapter._pools) == 1
    # Closing closes the kept pools (their idle connections), and the next call opens another.
    up.close()
    assert adapter._pools == {}
    assert up.request("p", "POST", url + "/v1/responses", headers={}, body=b"{}").read() == b"{}"
    assert len(got) == 4 and len(connections) == 2
    up.close()


def test_an_origin_names_its_pool_whatever_the_path():
    assert _origin("http://127.0.0.1:8000/v1/responses?x=1") == "http://127.0.0.1:8000"
    assert _origin("HTTPS://API.example.com?x=/y") == "https://api.example.com"
    assert _origin("https://api.example.com#frag") == "https://api.example.com"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_refused_connection_is_named_as_such_with_or_without_a_body(method):
    # A free port: bound, then closed, so nothing listens there.
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    body = b"{}" if method == "POST" else None
    with pytest.raises(UpstreamError) as err:
        _upstream().request("p", method, f"http://127.0.0.1:{port}/v1/x", headers={}, body=body)
    # Named as a connect failure: with the head held back, the connect still happens in the request.
    message = err.value.message
    assert f"at 127.0.0.1:{port} could not be reached" in message and "Connection refused" in message
    assert "Connection(" not in message, message  # urllib3's internal class (_GeventHTTPConnection(host=...))

"""Streams whose client left while the provider is silent: SSE comment heartbeats make the gateway notice,
and it closes the provider connection within one interval. SDKs parse streams with heartbeats in them."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import threading
import time

import pytest

from tests.conftest import KEY, ROOT, Gunicorn

INTERVAL = 1.0
CLIENTS = 50
STALL = 40.0


class StallingProvider:
    """A Responses provider that sends its first event, then says nothing for 40 s, and notes the moment
    each connection is closed by the gateway (EOF on the socket), without ever writing to it again.
    """

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.opened = 0
        self.closed_at: list[float] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            while len(rest) < length:
                rest += conn.recv(65536)
            event = {
                "type": "response.created",
                "sequence_number": 0,
                "response": {"id": "resp_stall", "object": "response", "status": "in_progress", "output": []},
            }
            frame = f"event: response.created\ndata: {json.dumps(event)}\n\n".encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n" % (len(frame), frame)
            )
            with self.lock:
                self.opened += 1
            readable, _, _ = select.select([conn], [], [], STALL)
            if readable and conn.recv(1) == b"":
                with self.lock:
                    self.closed_at.append(time.monotonic())

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def staller():
    provider = StallingProvider()
    yield provider
    provider.stop()


def _open_stream(base: str) -> socket.socket:
    """A client that asks for a stream and reads until the first event has arrived."""
    port = int(base.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    body = json.dumps({"model": "m", "input": "hi", "stream": True, "store": False}).encode()
    sock.sendall(
        b"POST /v1/responses HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nx-portkey-provider: staller\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = b""
    while b"response.created" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    assert b" 200 " in data.split(b"\r\n", 1)[0]
    return sock


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_clients_that_leave_a_silent_stream_close_the_provider_connection(staller, gateway_env, worker_class):
    env = {
        **gateway_env,
        "GATEWAY_PROVIDERS__STALLER__BASE_URL": staller.url,
        "GATEWAY_PROVIDERS__STALLER__API": "responses",
        "GATEWAY_STREAM_HEARTBEAT_INTERVAL": str(INTERVAL),
    }
    server = Gunicorn(env, workers=1, threads=128, worker_class=worker_class)
    try:
        clients = [_open_stream(server.url) for _ in range(CLIENTS)]
        deadline = time.monotonic() + 10
        while staller.opened < CLIENTS:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        left = time.monotonic()
        for sock in clients:
            sock.close()
        deadline = left + INTERVAL + 1
        while len(staller.closed_at) < CLIENTS and time.monotonic() < deadline + 2:
            time.sleep(0.05)
        late = [t - left for t in staller.closed_at if t > deadline]
        assert len(staller.closed_at) == CLIENTS, f"{len(staller.closed_at)} of {CLIENTS} provider connections closed"
        assert not late, f"closed too late: {late}"
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.node
def test_heartbeats_are_sent_on_quiet_streams_and_sdks_ignore_them(fake, gateway_env, make_sdk):
    import requests

    env = {**gateway_env, "GATEWAY_STREAM_HEARTBEAT_INTERVAL": "0.2"}
    server = Gunicorn(env, workers=1, threads=16)
    try:
        body = {
            "model": "m",
            "input": "one two three four",
            "stream": True,
            "metadata": {"fake_deltas": "4", "fake_gap_ms": "700"},
        }
        headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
        with requests.post(server.url + "/v1/responses", json=body, headers=headers, stream=True, timeout=30) as r:
            lines = list(r.iter_lines(decode_unicode=True))
        assert ": keep-alive" in lines
        node = subprocess.run(
            ["node", "openai_stream.mjs", server.url + "/v1", "openai", json.dumps(body)],
            cwd=ROOT / "tests" / "node_client",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert node.returncode == 0, node.stderr
        seen = json.loads(node.stdout)
        assert seen["types"][-1] == "response.completed"
        assert seen["text"].endswith("one two three four")
        client = make_sdk(server.url + "/v1")
        events = list(client.responses.create(**body))
        assert [e.type for e in events][-1] == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text.endswith("one two three four")
        assert text == events[-1].response.output_text
    finally:
        server.stop()

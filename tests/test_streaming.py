"""Streaming through gunicorn over real sockets: no buffering, disconnects, cut and early-ended streams."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time

import openai
import pytest
import requests

from tests.conftest import KEY, Gunicorn

HEADERS = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def gateway(request, gateway_env):
    """Both worker types the gateway supports: greenlets (the default) and threads."""
    server = Gunicorn(gateway_env, worker_class=request.param)
    yield server
    server.stop()


def _stream(gateway, **metadata):
    body = {"model": "m", "input": "a b c d e f g h", "stream": True, "metadata": metadata}
    return requests.post(gateway.url + "/v1/responses", json=body, headers=HEADERS, stream=True, timeout=30)


def _events(resp):
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            yield json.loads(line[6:])


@pytest.mark.slow
def test_sse_headers(gateway):
    with _stream(gateway) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["Cache-Control"] == "no-cache"
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["x-portkey-provider"] == "openai"
        assert list(_events(resp))[-1]["type"] == "response.completed"


@pytest.mark.slow
def test_first_event_arrives_before_the_provider_sends_the_last(gateway, fake):
    with _stream(gateway, fake_deltas="4", fake_gap_ms="300") as resp:
        events = _events(resp)
        first_delta = next(e for e in events if e["type"] == "response.output_text.delta")
        # The provider is still sleeping between deltas: nothing on the way buffered the stream.
        assert "response.completed" not in fake.sent
        assert first_delta["sequence_number"] == 4
        rest = list(events)
    assert rest[-1]["type"] == "response.completed"


@pytest.mark.slow
def test_client_disconnect_closes_the_upstream_connection(gateway, fake):
    body = json.dumps(
        {
            "model": "m",
            "input": "a b c d e f g h i j",
            "stream": True,
            "metadata": {"fake_deltas": "10", "fake_gap_ms": "200"},
        }
    ).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(
        b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nx-portkey-provider: openai\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while b"response.created" not in received:
        received += sock.recv(4096)
    sock.close()
    # The gateway notices at its next write, then closes its upstream response: the provider's write fails.
    assert fake.disconnected.wait(10)
    assert "response.completed" not in fake.sent


def test_upstream_cut_mid_stream_ends_with_an_error_event(gateway):
    with _stream(gateway, fake_cut_after="5") as resp:
        events = list(_events(resp))
    assert [e["type"] for e in events[:5]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert events[-1]["type"] == "error"
    assert events[-1]["sequence_number"] == 5
    assert events[-1]["error"]["code"] == "upstream_error"


def test_stream_that_ends_without_a_terminal_event_is_an_error(gateway):
    with _stream(gateway, fake_end_after="6") as resp:
        events = list(_events(resp))
    assert len(events) == 7
    assert events[-1]["type"] == "error"
    assert events[-1]["code"] == "upstream_stream_interrupted"


def test_sdk_raises_on_a_cut_stream(gateway, make_sdk):
    sdk = make_sdk(gateway.url + "/v1")
    with pytest.raises(openai.APIError):
        for _ in sdk.responses.create(model="m", input="x y z", stream=True, metadata={"fake_cut_after": "4"}):
            pass


def test_error_before_the_first_byte_is_plain_json(gateway):
    resp = requests.post(
        gateway.url + "/v1/responses",
        json={"model": "m", "input": "x", "stream": True, "metadata": {"fake_status": "429", "fake_retry_after": "3"}},
        headers=HEADERS,
        timeout=10,
    )
    assert resp.status_code == 429
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.headers["Retry-After"] == "3"
    assert resp.json()["error"]["message"] == "Injected 429"


@pytest.mark.slow
def test_one_worker_holds_hundreds_of_streams_at_once(gateway_env):
    """200 streams open together on one gevent worker, each from first event to `response.completed`."""
    count = 200
    server = Gunicorn(gateway_env, workers=1, threads=count + 10)
    body = {
        "model": "m",
        "input": "a b c d",
        "stream": True,
        "store": False,
        "metadata": {"fake_deltas": "4", "fake_gap_ms": "1000"},
    }

    def one() -> tuple[float, float, list[str]]:
        with requests.post(server.url + "/v1/responses", json=body, headers=HEADERS, stream=True, timeout=60) as r:
            assert r.status_code == 200, r.text
            events = _events(r)
            types = [next(events)["type"]]
            first = time.monotonic()
            types += [e["type"] for e in events]
            return first, time.monotonic(), types

    try:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            results = list(pool.map(lambda _: one(), range(count), timeout=90))
    finally:
        server.stop()
    assert all(types[-1] == "response.completed" for _, _, types in results)
    assert all(types.count("response.output_text.delta") >= 3 for _, _, types in results)
    # Every stream had its first event before any stream ended: all 200 were open at the same time.
    assert max(first for first, _, _ in results) < min(end for _, end, _ in results)

"""deploy/nginx.conf in front of gunicorn, with a real nginx: streamed events arrive one by one through it."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import KEY, ROOT, Gunicorn, free_port


@pytest.fixture
def nginx(gateway, tmp_path):
    yield from _nginx(gateway, tmp_path)


def _nginx(gateway, tmp_path):
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is required for this test (.ci/run installs it from apt)"
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("server 127.0.0.1:8787;", f"server 127.0.0.1:{gateway.port};")
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    (tmp_path / "site.conf").write_text(site)
    # deploy/nginx-main.conf as it is, but for the paths a test can write to (and no user to switch to).
    main = (ROOT / "deploy" / "nginx-main.conf").read_text()
    for line, replacement in {
        "user www-data;": "daemon off;",
        "pid /run/nginx.pid;": f"pid {tmp_path}/nginx.pid;",
        "error_log /var/log/nginx/error.log warn;": f"error_log {tmp_path}/error.log warn;",
        "access_log /var/log/nginx/ai-gateway.log gateway;": f"access_log {tmp_path}/access.log gateway;",
        "client_body_temp_path /var/lib/nginx/body;": f"client_body_temp_path {tmp_path}/body;",
        "proxy_temp_path /var/lib/nginx/proxy;": (
            f"proxy_temp_path {tmp_path}/proxy; fastcgi_temp_path {tmp_path}/fastcgi; "
            f"uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;"
        ),
        "include /etc/nginx/conf.d/ai-gateway.conf;": f"include {tmp_path}/site.conf;",
    }.items():
        assert line in main, line
        main = main.replace(line, replacement)
    (tmp_path / "nginx.conf").write_text(main)
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            requests.get(url + "/healthz", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("nginx did not start: " + (tmp_path / "error.log").read_text()) from None
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.mark.slow
def test_events_arrive_one_by_one_through_nginx(nginx, fake):
    body = {
        "model": "m",
        "input": "a b c d e f g h",
        "stream": True,
        "metadata": {"fake_deltas": "4", "fake_gap_ms": "300"},
    }
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
    with requests.post(nginx + "/v1/responses", json=body, headers=headers, stream=True, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = (json.loads(line[6:]) for line in resp.iter_lines() if line.startswith(b"data: "))
        first = next(e for e in events if e["type"] == "response.output_text.delta")
        # The provider is still between deltas: neither nginx nor the gateway held the stream back.
        assert "response.completed" not in fake.sent
        assert first["sequence_number"] == 4
        rest = list(events)
    assert rest[-1]["type"] == "response.completed"


def test_json_and_errors_pass_through_nginx(nginx):
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
    ok = requests.post(nginx + "/v1/responses", json={"model": "m", "input": "hi"}, headers=headers, timeout=10)
    assert ok.status_code == 200 and ok.json()["output"][0]["content"][0]["text"] == "Echo 1: hi"
    bad = requests.post(nginx + "/v1/responses", json={"input": "hi"}, headers=headers, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"


def _hold(url: str, count: int, half: bytes, source: str = "127.0.0.2") -> list[socket.socket]:
    """``count`` connections from another client address that each send ``half`` of a request and then
    say nothing more.
    """
    port = int(url.rsplit(":", 1)[1])
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
        sock.sendall(half)
        held.append(sock)
    return held


HALF_HEADERS = b"POST /v1/responses HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
HALF_BODY = (
    f"POST /v1/responses HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\nx-portkey-provider: openai\r\n"
    "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
).encode()


@pytest.mark.slow
def test_a_client_holding_many_idle_connections_does_not_delay_another(gateway_env, fake, tmp_path):
    """Half-sent requests stay in nginx: the gateway behind it serves everyone else at once. Without
    nginx the same connections take every gunicorn connection slot, and another client waits.
    """
    server = Gunicorn(gateway_env, workers=1, threads=16)
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
    body = {"model": "m", "input": "hi"}
    proxy = _nginx(server, tmp_path)
    url = next(proxy)
    try:
        held = _hold(url, 300, HALF_HEADERS) + _hold(url, 300, HALF_BODY)
        try:
            for _ in range(5):
                resp = requests.post(url + "/v1/responses", json=body, headers=headers, timeout=2)
                assert resp.status_code == 200
            # The holder itself is limited: past 256 connections with whole headers, nginx answers 429.
            refused = 0
            for sock in held[300:]:
                sock.settimeout(0.05)
                with contextlib.suppress(TimeoutError):
                    refused += b" 429 " in sock.recv(4096)
            assert refused >= 300 - 256
        finally:
            for sock in held:
                sock.close()
        # The same attack straight at gunicorn: its 16 connection slots are taken, the next client waits.
        held = _hold(server.url, 40, HALF_BODY)
        try:
            with pytest.raises(requests.Timeout):
                requests.post(server.url + "/v1/responses", json=body, headers=headers, timeout=2)
        finally:
            for sock in held:
                sock.close()
    finally:
        next(proxy, None)
        server.stop()


def test_nginx_refusals_are_in_the_error_shape(nginx):
    big = b"{" + b" " * (17 * 1024 * 1024) + b"}"
    resp = requests.post(nginx + "/v1/responses", data=big, headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"


def test_metrics_are_not_served_through_nginx(nginx, gateway):
    # Scraped per instance at gunicorn's own address; through the balancer each scrape would be another's.
    resp = requests.get(nginx + "/metrics", timeout=10)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert requests.get(gateway.url + "/metrics", timeout=10).status_code == 200

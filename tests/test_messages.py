"""Messages that say what to do, and the README's claims about replies, checked one by one."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from gateway import create_app
from tests.conftest import KEY, close_app, free_port

PORTKEY = ("x-portkey-provider", "x-portkey-last-used-option-index", "x-portkey-retry-attempt-count")


def _unreachable(settings, base_url: str):
    app = create_app({**settings, "providers": {"down": {"base_url": base_url, "api": "chat"}}})
    try:
        return app.test_client().post(
            "/v1/responses",
            json={"model": "m", "input": "hi"},
            headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "down"},
        )
    finally:
        close_app(app)


def test_a_refused_connection_names_the_host_the_kind_and_the_setting(settings):
    port = free_port()
    resp = _unreachable(settings, f"http://127.0.0.1:{port}/v1")
    message = resp.json["error"]["message"]
    assert resp.status_code == 502
    assert f"at 127.0.0.1:{port}" in message
    assert "refused" in message
    assert "providers.down.base_url" in message


def test_a_name_that_does_not_resolve_says_dns(settings):
    resp = _unreachable(settings, "http://no-such-host.invalid/v1")
    message = resp.json["error"]["message"]
    assert resp.status_code == 502
    assert "no-such-host.invalid" in message and "DNS" in message


def test_a_tls_failure_says_tls(settings):
    # A plain-TCP server that answers the TLS hello with garbage.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        import threading

        def serve() -> None:
            conn, _ = server.accept()
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

        threading.Thread(target=serve, daemon=True).start()
        resp = _unreachable(settings, f"https://127.0.0.1:{port}/v1")
    assert resp.status_code == 502
    assert "TLS" in resp.json["error"]["message"]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/healthz", {}, 200),
        ("/v1/responses/resp_nope", {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"}, 404),
        ("/v1/responses/resp_nope", {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "nope"}, 400),
        ("/v1/responses/resp_nope", {}, 401),
    ],
)
def test_replies_refused_before_a_provider_carry_only_the_trace_id(client, path, headers, status):
    resp = client.get(path, headers=headers)
    assert resp.status_code == status
    assert resp.headers["x-portkey-trace-id"]
    assert not any(name in resp.headers for name in PORTKEY)


def test_replies_through_a_provider_carry_the_routing_headers(client, headers, settings):
    ok = client.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=headers)
    down = _unreachable(settings, f"http://127.0.0.1:{free_port()}/v1")
    for resp in (ok, down):
        assert resp.headers["x-portkey-trace-id"]
        assert all(name in resp.headers for name in PORTKEY), dict(resp.headers)


def test_purge_prints_its_count_once_when_not_on_a_terminal(app):
    from flask.cli import ScriptInfo

    from gateway.cli import main

    client = app.test_client()
    client.post(
        "/v1/responses",
        json={"model": "mock-1", "input": "hi"},
        headers={"Authorization": "Bearer d", "x-portkey-provider": "mock"},
    )
    # CliRunner's stdout is not a terminal: one line, no carriage return rewriting it.
    result = CliRunner().invoke(main, ["purge", "--older-than", "0s"], obj=ScriptInfo(create_app=lambda: app))
    assert result.output == "purged 1 responses older than 0s\n"

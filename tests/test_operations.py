"""What an operator relies on beyond requests: keys that stay where they belong, bounded metrics, a
protected /metrics, readiness, a private store file, and one control socket per gunicorn instance."""

from __future__ import annotations

import hashlib
import os
import re
import stat

import pytest
import requests

from gateway import create_app
from gateway.auth import key_digest
from tests.conftest import KEY, Gunicorn, close_app

OPERATOR_KEY = "sk-operator-secret-123456"
GATEWAY_KEY = "gw-team-a-key"


@pytest.fixture
def keyed_app(settings):
    keys = {"team-a": {"digest": key_digest(GATEWAY_KEY), "providers": {"openai": {"api_key": OPERATOR_KEY}}}}
    app = create_app({**settings, "keys": keys, "gateway_key_prefix": "gw-"})
    yield app
    close_app(app)


@pytest.mark.parametrize("mistyped", ["gw-team-a-kee", "GW-team-a-key", "Gw-team-a-key"])
def test_a_key_with_the_gateway_prefix_that_matches_none_is_401_and_never_forwarded(keyed_app, fake, mistyped):
    client = keyed_app.test_client()
    fake.requests.clear()
    resp = client.post(
        "/v1/responses",
        json={"model": "m", "input": "x"},
        headers={"Authorization": f"Bearer {mistyped}", "x-portkey-provider": "openai"},
    )
    assert resp.status_code == 401
    assert resp.json["error"]["code"] == "invalid_api_key"
    assert fake.requests == []
    # The real gateway key works, and an ordinary provider key is still forwarded as before.
    ok = client.post(
        "/v1/responses",
        json={"model": "m", "input": "x"},
        headers={"Authorization": f"Bearer {GATEWAY_KEY}", "x-portkey-provider": "openai"},
    )
    assert ok.status_code == 200
    assert fake.requests[-1]["headers"]["Authorization"] == f"Bearer {OPERATOR_KEY}"
    own = client.post("/v1/responses", json={"model": "m", "input": "x"}, headers={"Authorization": f"Bearer {KEY}"})
    assert own.status_code == 400  # no provider named: but the key itself was accepted


def test_provider_errors_never_carry_the_operators_credentials(keyed_app, fake):
    client = keyed_app.test_client()
    resp = client.post(
        "/v1/responses",
        json={"model": "m", "input": "x", "metadata": {"fake_status": "400", "fake_echo_headers": "1"}},
        headers={"Authorization": f"Bearer {GATEWAY_KEY}", "x-portkey-provider": "openai"},
    )
    assert resp.status_code == 400
    text = resp.get_data(as_text=True)
    assert "request headers" in text  # the provider did echo them
    assert OPERATOR_KEY not in text
    assert "[redacted]" in text


def test_provider_keys_refused_say_that_gateway_keys_are_required(settings):
    app = create_app({**settings, "allow_provider_keys": False})
    try:
        resp = app.test_client().post(
            "/v1/responses", json={"model": "m", "input": "x"}, headers={"Authorization": f"Bearer {KEY}"}
        )
        assert resp.status_code == 401
        assert "gateway keys" in resp.json["error"]["message"]
    finally:
        close_app(app)


def test_metrics_can_require_a_token(settings):
    app = create_app({**settings, "metrics_token": "scrape-me"})
    try:
        client = app.test_client()
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status_code == 200 and b"gateway_requests_total" in ok.data
    finally:
        close_app(app)


def _series(text: str, name: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.slow
def test_unique_model_names_do_not_grow_the_metrics(settings, fake):
    app = create_app({**settings, "metrics_max_models": 20})
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
        for i in range(10_000):
            if i % 4 == 0:
                resp = client.post(
                    "/v1/responses", json={"model": f"m-{i}", "input": "x", "store": False}, headers=headers
                )
                assert resp.status_code == 200
            elif i % 4 == 1:  # unauthenticated
                resp = client.post("/v1/responses", json={"model": f"m-{i}", "input": "x"})
                assert resp.status_code == 401
            elif i % 4 == 2:  # invalid
                resp = client.post("/v1/responses", json={"model": f"m-{i}", "input": 5}, headers=headers)
                assert resp.status_code == 400
            else:  # unknown provider
                bad = {**headers, "x-portkey-provider": f"p-{i}"}
                resp = client.post("/v1/responses", json={"model": f"m-{i}", "input": "x"}, headers=bad)
                assert resp.status_code == 400
            resp.close()  # the request is counted when its response is closed, as under a real server
        text = client.get("/metrics").get_data(as_text=True)
        models = set(re.findall(r'gateway_requests_total\{[^}]*model="([^"]*)"', text))
        # 20 named models, "other" for the 2,480 after them, "" for everything refused.
        assert len(models) == 22, sorted(models)[:30]
        assert {"other", ""} <= models
        assert _series(text, "gateway_requests_total") <= 25
        assert not any(f'provider="p-{i}"' in text for i in range(3, 10_000, 4))
    finally:
        close_app(app)


def test_the_sqlite_store_is_private_to_its_owner(tmp_path, fake):
    path = tmp_path / "private.sqlite3"
    old = os.umask(0o022)
    try:
        app = create_app({"providers": {"openai": {"base_url": fake.url}}, "store_url": f"sqlite:///{path}"})
        client = app.test_client()
        headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
        assert client.post("/v1/responses", json={"model": "m", "input": "x"}, headers=headers).status_code == 200
        for name in (path, tmp_path / "private.sqlite3-wal", tmp_path / "private.sqlite3-shm"):
            assert name.exists(), name
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, (name, oct(name.stat().st_mode))
        close_app(app)
    finally:
        os.umask(old)


@pytest.mark.slow
def test_each_gunicorn_instance_has_its_own_control_socket(gateway_env):
    first = Gunicorn(gateway_env, workers=1, threads=4)
    second = Gunicorn(gateway_env, workers=1, threads=4)
    stopped = False
    try:
        sockets = [f"/tmp/gateway-{server.proc.pid}.ctl" for server in (first, second)]
        base = os.environ.get("XDG_RUNTIME_DIR")
        if base:
            sockets = [os.path.join(base, os.path.basename(s)) for s in sockets]
        assert all(os.path.exists(s) and stat.S_ISSOCK(os.stat(s).st_mode) for s in sockets), sockets
        first.stop()
        stopped = True
        assert os.path.exists(sockets[1]), "stopping one instance removed the other's control socket"
        assert requests.get(second.url + "/healthz", timeout=5).status_code == 200
    finally:
        if not stopped:
            first.stop()
        second.stop()


def test_readyz_is_ready_when_the_store_answers(client):
    resp = client.get("/readyz")
    assert resp.status_code == 200 and resp.json == {"status": "ready", "queue": {"status": "ok"}}


def test_readyz_says_why_when_the_schema_is_not_current(app, client):
    store = app.extensions["gateway"].store
    store.prepare()  # the schema is made at the first store call; this test changes it directly
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE gw_meta SET value = '0' WHERE key = 'schema_version'")
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert "schema" in resp.json["reason"]
    assert client.get("/healthz").status_code == 200  # liveness is not readiness


def test_gateway_key_digest_helper_matches_sha256():
    assert key_digest("x") == "sha256:" + hashlib.sha256(b"x").hexdigest()


def test_a_model_name_with_control_characters_is_counted_as_other(settings, fake):
    app = create_app(settings)
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
        # (A NUL is refused before this, by the request's schema: issue 21 item 8.)
        resp = client.post("/v1/responses", json={"model": "m\x01\nx", "input": "x", "store": False}, headers=headers)
        assert resp.status_code == 200
        resp.close()
        text = client.get("/metrics").get_data(as_text=True)
        lines = [line for line in text.splitlines() if "\x01" in line or "\x00" in line]
        assert not lines and 'model="other"' in text, lines
    finally:
        close_app(app)

"""Limits per key: requests and tokens per minute across hosts (Redis, or the store), the models a key may use,
what happens when the counter cannot be reached. Budgets in USD are in tests/test_spend.py's territory too:
they read the usage table.
"""

from __future__ import annotations

import threading
import time
import uuid

import openai
import pytest
import requests

from gateway.auth import key_digest
from tests.conftest import KEY, Gunicorn

TEAM_KEY = "gw-team-a-secret"
TEAM = {"Authorization": f"Bearer {TEAM_KEY}", "x-portkey-provider": "fakechat"}


def _settings(settings, **limits) -> dict:
    return {
        **settings,
        "keys": {
            "team-a": {
                "digest": key_digest(TEAM_KEY),
                "providers": {"fakechat": {"api_key": KEY}},
                "limits": limits,
            }
        },
    }


def _post(client, headers=TEAM, **body):
    return client.post("/v1/responses", json={"model": "m", "input": "hi", **body}, headers=headers)


def test_requests_per_minute_refuses_the_next_with_openais_shape_and_headers(settings):
    from gateway import create_app
    from tests.conftest import close_app

    app = create_app(_settings(settings, requests_per_minute=3))
    try:
        client = app.test_client()
        answers = [_post(client) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["x-ratelimit-remaining-requests"] for a in answers[:3]] == ["2", "1", "0"]
        assert all(a.headers["x-ratelimit-limit-requests"] == "3" for a in answers)
        refused = answers[-1]
        error = refused.json["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert set(error) == {"message", "type", "param", "code"}
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
        # A provider-key caller has no limits here (no [limits.default]).
        other = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"}
        assert _post(client, headers=other).status_code == 200
    finally:
        close_app(app)


def test_the_default_applies_to_callers_without_limits_of_their_own(settings):
    from gateway import create_app
    from tests.conftest import close_app

    app = create_app({**settings, "limits": {"default": {"requests_per_minute": 1}}})
    try:
        client = app.test_client()
        mine = {"Authorization": f"Bearer sk-mine-{uuid.uuid4().hex}", "x-portkey-provider": "fakechat"}
        theirs = {"Authorization": f"Bearer sk-theirs-{uuid.uuid4().hex}", "x-portkey-provider": "fakechat"}
        assert _post(client, headers=mine).status_code == 200
        assert _post(client, headers=mine).status_code == 429
        assert _post(client, headers=theirs).status_code == 200  # each tenant its own window
    finally:
        close_app(app)


def test_models_outside_the_allow_list_are_403_and_not_listed(settings, fake):
    from gateway import create_app
    from tests.conftest import close_app

    app = create_app(_settings(settings, models=["gpt-4o-mini", "mock-*"]))
    try:
        client = app.test_client()
        refused = _post(client, model="gpt-4o")
        assert refused.status_code == 403
        assert refused.json["error"]["code"] == "model_not_allowed" and refused.json["error"]["param"] == "model"
        assert _post(client, model="mock-large").status_code == 200
        fake.models = ["gpt-4o", "gpt-4o-mini", "mock-large", "other"]
        listed = client.get("/v1/models", headers=TEAM)
        assert listed.status_code == 200, listed.json
        assert [m["id"] for m in listed.json["data"]] == ["gpt-4o-mini", "mock-large"]
        assert client.get("/v1/models/gpt-4o", headers=TEAM).status_code == 404
    finally:
        close_app(app)


def test_tokens_are_reserved_then_settled_from_usage(settings):
    from gateway import create_app
    from tests.conftest import close_app

    app = create_app(_settings(settings, tokens_per_minute=1000))
    try:
        client = app.test_client()
        first = _post(client, input="hello there", max_output_tokens=300)
        assert first.status_code == 200
        used = first.json["usage"]["total_tokens"]
        # Settled: what is left is the limit less what the response used, not less the reservation.
        second = _post(client, input="x", max_output_tokens=1000 - used)  # reserves more than is left: refused
        assert second.status_code == 429, second.json
        assert second.json["error"]["type"] == "tokens"
        assert int(second.headers["x-ratelimit-remaining-tokens"]) == 1000 - used
        third = _post(client, input="x", max_output_tokens=10)
        assert third.status_code == 200
    finally:
        close_app(app)


def _env(gateway_env, **extra) -> dict:
    env = {
        **gateway_env,
        "GATEWAY_KEYS__TEAM_A__DIGEST": key_digest(TEAM_KEY),
        "GATEWAY_KEYS__TEAM_A__PROVIDERS__FAKECHAT__API_KEY": KEY,
        "GATEWAY_KEYS__TEAM_A__LIMITS__REQUESTS_PER_MINUTE": "7",
    }
    env.update(extra)
    return env


def _sdk(make_sdk, server) -> openai.OpenAI:
    return make_sdk(server.url + "/v1", api_key=TEAM_KEY, provider="fakechat")


def _wait_for_a_fresh_minute() -> None:
    # The windows are the clock's minutes: start well inside one, so the N requests share it.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


@pytest.mark.parametrize("counter", ["redis", "store", "sqlite"])
def test_two_gateways_share_one_limit_exactly(gateway_env, redis_url, pg_schema, counter, fake, make_sdk, tmp_path):
    # redis: limits_store; store: the PostgreSQL store's gw_limits; sqlite: two instances on one host sharing a
    # SQLite store, counting in the file beside it.
    store = {"GATEWAY_STORE_URL": pg_schema if counter != "sqlite" else f"sqlite:///{tmp_path / 'shared.sqlite3'}"}
    if counter == "redis":
        store["GATEWAY_LIMITS_STORE"] = redis_url.rstrip("/") + f"/{3 + uuid.uuid4().int % 10}"
    one = Gunicorn(_env(gateway_env, **store))
    two = Gunicorn(_env(gateway_env, **store))
    clients = (_sdk(make_sdk, one), _sdk(make_sdk, two))
    try:
        _wait_for_a_fresh_minute()
        passed, refused = [], []
        for i in range(10):
            try:
                clients[i % 2].responses.create(model="m", input=f"n{i}")
                passed.append(i)
            except openai.RateLimitError as err:
                refused.append(err)
        assert len(passed) == 7 and len(refused) == 3
        assert passed == list(range(7))
        headers = refused[0].response.headers
        assert headers["x-ratelimit-limit-requests"] == "7" and headers["x-ratelimit-remaining-requests"] == "0"
        assert refused[0].code == "rate_limit_exceeded"
    finally:
        one.stop()
        two.stop()


@pytest.fixture
def private_redis():
    from tests.services import PrivateRedis

    server = PrivateRedis().start()
    yield server
    server.stop()


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_redis_killed_mid_load(gateway_env, fail, private_redis):
    env = _env(gateway_env, GATEWAY_LIMITS_STORE=private_redis.url, GATEWAY_LIMITS_FAIL=fail)
    env["GATEWAY_KEYS__TEAM_A__LIMITS__REQUESTS_PER_MINUTE"] = "100000"
    server = Gunicorn(env, workers=1)
    statuses: list[tuple[float, int, str | None]] = []
    stop = threading.Event()

    def load() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                answer = session.post(server.url + "/v1/responses", json={"model": "m", "input": "x"}, headers=TEAM)
                code = answer.json()["error"]["code"] if answer.status_code >= 400 else None
                statuses.append((time.monotonic(), answer.status_code, code))

    loader = threading.Thread(target=load)
    try:
        loader.start()
        time.sleep(1)
        killed = time.monotonic()
        private_redis.down()
        time.sleep(1.5)
        during = requests.get(server.url + "/readyz", timeout=5).json()["limits"]
        private_redis.start()
        back = time.monotonic()
        time.sleep(2)
        stop.set()
        loader.join(timeout=30)
        after = requests.get(server.url + "/readyz", timeout=5).json()["limits"]
        metrics = requests.get(server.url + "/metrics", timeout=5).text
    finally:
        stop.set()
        out = server.stop()
    assert {status for _, status, _ in statuses} <= {200, 503}, statuses
    down = [(status, code) for at, status, code in statuses if killed + 0.2 < at < back]
    assert down, "no request while Redis was down"
    if fail == "open":
        assert {status for status, _ in down} == {200}
        assert during["status"] == "unavailable" and during["fail"] == "open"
    else:
        assert {(status, code) for status, code in down} == {(503, "limits_unavailable")}
    assert [status for at, status, _ in statuses if at > back + 1] and all(
        status == 200 for at, status, _ in statuses if at > back + 1
    )
    assert after["status"] == "ok"
    counted = [line for line in metrics.splitlines() if line.startswith("gateway_limits_unavailable_total")]
    assert counted and float(counted[0].split()[-1]) >= len(down), counted
    assert out.count("limits store unreachable") == 1, out[-2000:]  # once per outage
    assert "Traceback" not in out


def test_limits_settings_are_checked_at_start_up():
    from gateway.config import Settings, SettingsError

    with pytest.raises(SettingsError, match="limits_fail"):
        Settings.load({"limits_fail": "maybe"})
    with pytest.raises(SettingsError, match="requests_per_minute"):
        Settings.load({"limits": {"default": {"requests_per_minute": -1}}})
    with pytest.raises(SettingsError, match=r"keys\.team\.limits\.usd_per_dya"):
        Settings.load({"keys": {"team": {"digest": key_digest("k"), "limits": {"usd_per_dya": 1}}}})


# ------------------------------------------------------------------------------------------ reload
@pytest.mark.slow
def test_a_reload_applies_new_limits_restarts_consumers_and_closes_websockets_with_1012(tmp_path, fake, make_sdk):
    import json
    import signal

    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from tests.test_background import _consumers, _until_done, _wait
    from tests.test_websocket import ws_url

    def settings(rpm: int) -> str:
        return (
            f'[providers.fakechat]\nbase_url = "{fake.url}"\napi = "chat"\n'
            f'[keys.team-a]\ndigest = "{key_digest(TEAM_KEY)}"\n'
            f'[keys.team-a.providers.fakechat]\napi_key = "{KEY}"\n'
            f"[keys.team-a.limits]\nrequests_per_minute = {rpm}\n"
        )

    path = tmp_path / "gw.toml"
    path.write_text(settings(4))
    server = Gunicorn(
        {
            "GATEWAY_CONFIG": str(path),
            "GATEWAY_STORE_URL": f"sqlite:///{tmp_path / 's.sqlite3'}",
            "GATEWAY_BACKGROUND_QUEUE": f"sqlite:///{tmp_path / 'q.sqlite3'}",
            "GATEWAY_BACKGROUND_CONSUMERS": "1",
            "GATEWAY_KEY_SALT": "test-salt",
            "GATEWAY_GRACEFUL_TIMEOUT": "20",
        },
        workers=1,
    )
    try:
        _wait_for_a_fresh_minute()
        sdk = _sdk(make_sdk, server)
        before = _wait(lambda: _consumers(server), 10)

        def status() -> int:
            return requests.post(
                server.url + "/v1/responses", json={"model": "m", "input": "x"}, headers=TEAM
            ).status_code

        assert [status(), status(), status()] == [200, 200, 200]
        socket = connect(ws_url(server.url), additional_headers=TEAM)
        streamed: list[str] = []

        def stream() -> None:
            body = {"model": "m", "input": "a b c d e f", "stream": True,
                    "metadata": {"fake_deltas": "10", "fake_gap_ms": "300"}}  # fmt: skip
            with requests.post(server.url + "/v1/responses", json=body, headers=TEAM, stream=True, timeout=30) as r:
                streamed.extend(line for line in r.iter_lines(decode_unicode=True) if line.startswith("event:"))

        runner = threading.Thread(target=stream)  # the fourth request: in flight through the reload
        runner.start()
        time.sleep(0.5)  # the stream has begun (its events are read as they come, 300 ms apart)
        assert status() == 429
        path.write_text(settings(100))
        server.proc.send_signal(signal.SIGHUP)
        _wait(lambda: "Replaced the background consumers" in server.output(), 20)
        with pytest.raises(ConnectionClosed) as closed:
            socket.recv(timeout=20)
        assert closed.value.rcvd.code == 1012
        runner.join(timeout=30)
        assert streamed[-1] == "event: response.completed"
        # The new workers apply the new limit; the new consumer runs background responses.
        _wait(lambda: status() == 200, 20)
        after = _wait(lambda: [p for p in _consumers(server) if p not in before], 20)
        assert after
        queued = sdk.responses.create(model="m", input="in the background", background=True)
        assert _until_done(sdk, queued.id).status == "completed"
        assert json.dumps(before) != json.dumps(_consumers(server))
    finally:
        out = server.stop()
    assert "Traceback" not in out, out[-3000:]

"""x-portkey-config and provider faults: retries, fallbacks, timeouts, custom hosts, each a real socket test."""

from __future__ import annotations

import json

import pytest

from gateway import create_app
from gateway.services import EXTENSION
from tests.conftest import free_port

KEY = {"Authorization": "Bearer sk-routing"}
BODY = {"model": "m", "input": "hello"}


@pytest.fixture
def settings(settings, fake):
    settings["providers"]["broken"] = {"base_url": f"http://127.0.0.1:{free_port()}/v1", "api": "responses"}
    settings.update(
        {
            "retry_backoff_base": 0.01,
            "retry_backoff_cap": 0.05,
            "retry_after_max": 2,
            "custom_hosts": [fake.url],
            "configs": {
                "prod": {"strategy": {"mode": "fallback"}, "targets": [{"provider": "broken"}, {"provider": "openai"}]}
            },
        }
    )
    return settings


def post(client, config=None, body=None, **headers):
    if config is None:
        headers.setdefault("x-portkey-provider", "openai")
    else:
        headers["x-portkey-config"] = config if isinstance(config, str) else json.dumps(config)
    return client.post("/v1/responses", json=body or BODY, headers={**KEY, **headers})


def test_fallback_moves_on_from_a_refused_connection(client):
    resp = post(client, {"strategy": {"mode": "fallback"}, "targets": [{"provider": "broken"}, {"provider": "openai"}]})
    assert resp.status_code == 200
    assert resp.headers["x-portkey-last-used-option-index"] == "1"
    assert resp.headers["x-portkey-provider"] == "openai"


def test_saved_config_by_name(client):
    resp = post(client, "prod")
    assert resp.status_code == 200 and resp.headers["x-portkey-last-used-option-index"] == "1"


def test_fallback_only_on_the_listed_statuses(client, fake):
    fake.knobs.update({"fail_first": 1, "fail_status": 400})
    config = {
        "strategy": {"mode": "fallback", "on_status_codes": [500]},
        "targets": [{"provider": "openai"}, {"provider": "openai"}],
    }
    resp = post(client, config)
    assert resp.status_code == 400 and resp.headers["x-portkey-last-used-option-index"] == "0"
    assert len(fake.requests) == 1


def test_500_then_success_is_retried(client, fake):
    fake.knobs.update({"fail_first": 2})
    resp = post(client, {"retry": {"attempts": 3}, "provider": "openai"})
    assert resp.status_code == 200
    assert resp.headers["x-portkey-retry-attempt-count"] == "2"
    assert len(fake.requests) == 3


def test_retries_run_out_and_the_last_answer_stands(client, fake):
    fake.knobs.update({"fail_first": 5, "fail_status": 503})
    resp = post(client, {"retry": {"attempts": 2}, "provider": "openai"})
    assert resp.status_code == 503 and resp.headers["x-portkey-retry-attempt-count"] == "2"
    assert resp.json["error"]["message"] == "Injected 503"


@pytest.mark.slow
def test_429_retry_after_is_honoured(client, fake):
    fake.knobs.update({"fail_first": 1, "fail_status": 429, "retry_after": "1"})
    resp = post(client, {"retry": {"attempts": 1}, "provider": "openai"})
    assert resp.status_code == 200
    first, second = fake.requests
    assert second["at"] - first["at"] >= 0.95


def test_retry_after_longer_than_the_gateway_waits_ends_the_retries(client, fake):
    fake.knobs.update({"fail_first": 1, "fail_status": 429, "retry_after": "60"})
    resp = post(client, {"retry": {"attempts": 3}, "provider": "openai"})
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "60"
    assert len(fake.requests) == 1


def test_statuses_outside_on_status_codes_are_not_retried(client, fake):
    fake.knobs.update({"fail_first": 1, "fail_status": 500})
    resp = post(client, {"retry": {"attempts": 3, "on_status_codes": [429]}, "provider": "openai"})
    assert resp.status_code == 500 and len(fake.requests) == 1


def test_request_timeout_is_408_in_the_error_shape(client, fake):
    fake.knobs.update({"delay_ms": 1500})
    resp = post(client, {"request_timeout": 200, "provider": "openai"})
    assert resp.status_code == 408
    assert resp.json["error"]["code"] == "request_timeout"
    assert set(resp.json["error"]) == {"message", "type", "param", "code"}


def test_loadbalance_follows_the_weights(client):
    config = {
        "strategy": {"mode": "loadbalance"},
        "targets": [{"provider": "broken", "weight": 0}, {"provider": "openai", "weight": 1}],
    }
    for _ in range(5):
        resp = post(client, config)
        assert resp.status_code == 200 and resp.headers["x-portkey-last-used-option-index"] == "1"


def test_override_params_change_the_request(client, fake):
    resp = post(client, {"provider": "openai", "override_params": {"model": "other-model"}})
    assert resp.status_code == 200
    assert fake.requests[-1]["body"]["model"] == "other-model"


def test_nested_strategy(client, fake):
    config = {
        "strategy": {"mode": "fallback"},
        "targets": [
            {"strategy": {"mode": "fallback"}, "targets": [{"provider": "broken"}, {"provider": "broken"}]},
            {"provider": "openai", "override_params": {"model": "last-resort"}},
        ],
    }
    resp = post(client, config)
    assert resp.status_code == 200 and resp.headers["x-portkey-last-used-option-index"] == "1"
    assert fake.requests[-1]["body"]["model"] == "last-resort"


@pytest.mark.parametrize(
    ("config", "param"),
    [
        ("{not json", "x-portkey-config"),
        ("unknown-name", "x-portkey-config"),
        ({"strategy": {"mode": "bogus"}, "targets": [{"provider": "openai"}]}, "x-portkey-config.strategy.mode"),
        (
            {"strategy": {"mode": "loadbalance"}, "targets": [{"provider": "openai", "weight": "x"}]},
            "x-portkey-config.targets[0].weight",
        ),
        ({"provider": "openai", "overide_params": {}}, "x-portkey-config.overide_params"),
        ({"retry": {"attempts": -1}, "provider": "openai"}, "x-portkey-config.retry.attempts"),
        ({"request_timeout": "soon", "provider": "openai"}, "x-portkey-config.request_timeout"),
        ({"targets": [{"provider": "openai"}]}, "x-portkey-config.strategy"),
        ({"strategy": {"mode": "fallback"}, "targets": []}, "x-portkey-config.targets"),
        ({"provider": "nope"}, "x-portkey-provider"),
    ],
)
def test_invalid_config_is_400_naming_the_field(client, fake, config, param):
    resp = post(client, config)
    assert resp.status_code == 400, resp.json
    assert resp.json["error"]["param"] == param
    assert fake.requests == []


def test_custom_host_only_when_allow_listed(client, fake):
    ok = post(client, **{"x-portkey-provider": "openai", "x-portkey-custom-host": fake.url})
    assert ok.status_code == 200
    bad = post(client, **{"x-portkey-provider": "openai", "x-portkey-custom-host": "http://127.0.0.2:9/v1"})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "custom_host_not_allowed"
    in_config = post(client, {"provider": "openai", "custom_host": "http://169.254.169.254/latest"})
    assert in_config.status_code == 400


def test_fallback_from_native_to_emulated_mid_conversation(client, fake):
    first = post(client, body=BODY, **{"x-portkey-provider": "openai"}).json
    config = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "broken"}, {"provider": "fakechat"}]}
    second = post(client, config, body={"model": "m", "input": "again", "previous_response_id": first["id"]})
    assert second.status_code == 200 and second.headers["x-portkey-provider"] == "fakechat"
    assert second.json["output"][0]["content"][0]["text"] == "Echo 2: again"
    assert fake.requests[-1]["body"]["messages"][1]["content"] == "Echo 1: hello"
    # and back: a native target gets the history inlined from the store
    config = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "broken"}, {"provider": "openai"}]}
    third = post(client, config, body={"model": "m", "input": "third", "previous_response_id": second.json["id"]})
    assert third.status_code == 200 and len(fake.requests[-1]["body"]["input"]) == 5


def _events(resp):
    return [json.loads(line[6:]) for line in resp.get_data().split(b"\n") if line.startswith(b"data: ")]


def test_stream_falls_back_when_a_target_fails_before_its_first_event(client, fake):
    fake.knobs.update({"fail_first": 1})
    config = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "openai"}, {"provider": "openai"}]}
    resp = post(client, config, body={**BODY, "stream": True})
    assert resp.status_code == 200 and resp.headers["x-portkey-last-used-option-index"] == "1"
    assert _events(resp)[-1]["type"] == "response.completed"


def test_stream_that_breaks_after_its_first_event_ends_with_error_and_is_recorded_failed(app, client):
    body = {**BODY, "stream": True, "metadata": {"fake_cut_after": "5"}}
    config = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "openai"}, {"provider": "openai"}]}
    resp = post(client, config, body=body)
    events = _events(resp)
    assert events[-1]["type"] == "error"
    assert resp.headers["x-portkey-last-used-option-index"] == "0"  # no fallback after the first event
    store = app.extensions[EXTENSION].store
    tenant = app.extensions[EXTENSION].auth.caller(KEY).tenant
    record = store.get(tenant, events[0]["response"]["id"])
    assert record.body["status"] == "failed" and record.body["error"]["code"] == "server_error"


@pytest.mark.parametrize(
    ("knobs", "status", "code"),
    [
        (
            {"status": 200, "body": "not json at all", "content_type": "application/json"},
            502,
            "upstream_invalid_response",
        ),
        ({"status": 200, "body": "<html>hello</html>", "content_type": "text/html"}, 502, "upstream_invalid_response"),
        ({"endless": True}, 502, "upstream_body_too_large"),
    ],
)
def test_malformed_provider_answers(settings, fake, knobs, status, code):
    client = create_app({**settings, "max_body_bytes": 1_000_000}).test_client()
    fake.knobs.update(knobs)
    resp = post(client, **{"x-portkey-provider": "openai"})
    assert resp.status_code == status and resp.json["error"]["code"] == code
    fake.knobs.clear()
    assert post(client, **{"x-portkey-provider": "openai"}).status_code == 200  # the worker is fine


@pytest.mark.slow
def test_slow_first_byte_and_stalled_stream_hit_the_read_timeout(settings, fake):
    client = create_app({**settings, "upstream_read_timeout": 0.3}).test_client()
    fake.knobs.update({"delay_ms": 1000})
    slow = post(client, **{"x-portkey-provider": "openai"})
    assert slow.status_code == 504 and slow.json["error"]["code"] == "upstream_timeout"
    fake.knobs.clear()
    fake.knobs.update({"gap_ms": 1000, "deltas": 3})
    stalled = post(client, body={**BODY, "stream": True}, **{"x-portkey-provider": "openai"})
    events = _events(stalled)
    assert stalled.status_code == 200 and events[-1]["type"] == "error"
    assert events[-1]["code"] == "upstream_timeout"

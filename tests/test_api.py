"""Validation, keys and error shapes through Flask's test client (no provider is reached)."""

from __future__ import annotations

import pytest

from gateway import create_app
from gateway.auth import key_digest
from gateway.config import Settings, SettingsError
from tests.conftest import close_app

H = {"Authorization": "Bearer sk-x", "x-portkey-provider": "openai"}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "hi"}, "model", "missing_required_parameter"),
        ({"model": "m"}, "input", "missing_required_parameter"),
        ({"model": 3, "input": "hi"}, "model", "invalid_value"),
        ({"model": "m", "input": 3}, "input", "invalid_value"),
        ({"model": "m", "input": [1]}, "input[0]", "invalid_value"),
        ({"model": "m", "input": "hi", "stream": "yes"}, "stream", "invalid_value"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens", "invalid_value"),
        ({"model": "m", "input": "hi", "max_output_tokens": True}, "max_output_tokens", "invalid_value"),
        ({"model": "m", "input": "hi", "max_output_tokens": 1.5}, "max_output_tokens", "invalid_value"),
        ({"model": "m", "input": "hi", "tools": {}}, "tools", "invalid_value"),
        ({"model": "m", "input": "hi", "tools": [1]}, "tools[0]", "invalid_value"),
        ({"model": "m", "input": "hi", "temperature": 3}, "temperature", "invalid_value"),
        ({"model": "m", "input": "hi", "metadata": {"k": 1}}, "metadata.k.value", "invalid_value"),
        ({"model": "m", "input": "hi", "instructions": ["x"]}, "instructions", "invalid_value"),
        ({"model": "m", "previous_response_id": 5}, "previous_response_id", "invalid_value"),
    ],
)
def test_invalid_fields_are_400_naming_the_param(client, body, param, code):
    resp = client.post("/v1/responses", json=body, headers=H)
    assert resp.status_code == 400
    assert resp.json["error"]["param"] == param
    assert resp.json["error"]["code"] == code
    assert resp.json["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"model": "\xff\xfe"}', "application/json", 400),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400),
        (b"model=m", "application/x-www-form-urlencoded", 415),
        (b"", "application/json", 400),
    ],
)
def test_malformed_bodies_are_clear_4xx(client, data, content_type, status):
    resp = client.post("/v1/responses", data=data, headers={**H, "Content-Type": content_type})
    assert resp.status_code == status
    assert set(resp.json["error"]) == {"message", "type", "param", "code"}


def test_oversized_body_is_413(settings):
    client = create_app({**settings, "max_body_bytes": 1000}).test_client()
    resp = client.post("/v1/responses", json={"model": "m", "input": "x" * 2000}, headers=H)
    assert resp.status_code == 413
    assert resp.json["error"]["code"] == "request_too_large"


def test_missing_key_is_401(client):
    resp = client.post("/v1/responses", json={"model": "m", "input": "hi"}, headers={"x-portkey-provider": "openai"})
    assert resp.status_code == 401
    assert resp.json["error"]["code"] is None


def test_unknown_provider_lists_the_known_ones(client):
    resp = client.post("/v1/responses", json={"model": "m", "input": "hi"}, headers={**H, "x-portkey-provider": "nah"})
    assert resp.status_code == 400
    for name in ("openai", "azure-openai", "xai", "groq", "openrouter", "ollama", "vllm"):
        assert name in resp.json["error"]["message"]


def test_hosted_tool_on_an_emulated_provider_is_left_out_and_said_by_default(client, fake):
    # issue 23: `hosted_tools = "omit"` is the default (a model cannot call what it is not shown).
    body = {"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}
    resp = client.post("/v1/responses", json=body, headers={**H, "x-portkey-provider": "fakechat"})
    assert resp.status_code == 200 and resp.headers["x-gateway-omitted-tools"] == "web_search"
    assert "tools" not in fake.requests[-1]["body"]


def test_hosted_tool_on_an_emulated_provider_is_refused_naming_the_param_when_the_provider_says_so(settings, fake):
    chat = {**settings["providers"]["fakechat"], "hosted_tools": "refuse"}
    app = create_app({**settings, "providers": {**settings["providers"], "fakechat": chat}})
    try:
        body = {"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}
        resp = app.test_client().post("/v1/responses", json=body, headers={**H, "x-portkey-provider": "fakechat"})
        assert resp.status_code == 400
        assert resp.json["error"]["param"] == "tools[0]"
        assert resp.json["error"]["code"] == "unsupported_parameter"
        assert fake.requests == []
    finally:
        close_app(app)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/responses/resp_1/input_items?limit=0", 400),
        ("/v1/responses/resp_1/input_items?limit=101", 400),
        ("/v1/responses/resp_1/input_items?limit=abc", 400),
        ("/v1/responses/resp_1/input_items?order=sideways", 400),
        ("/v1/responses/resp_1/input_items?bogus=1", 400),
        ("/v1/responses/..", 400),
        ("/v1/responses/.hidden", 400),
        ("/v1/nothing", 404),
    ],
)
def test_bad_read_requests(client, path, status):
    resp = client.get(path, headers=H)
    assert resp.status_code == status
    assert set(resp.json["error"]) == {"message", "type", "param", "code"}


def test_wrong_method_is_405_in_the_shape(client):
    resp = client.put("/v1/responses", headers=H)
    assert resp.status_code == 405
    assert resp.json["error"]["code"] == "method_not_allowed"


def test_trace_id_is_echoed_or_minted(client):
    resp = client.get("/healthz", headers={"x-portkey-trace-id": "trace-123"})
    assert resp.headers["x-portkey-trace-id"] == "trace-123"
    assert len(client.get("/healthz").headers["x-portkey-trace-id"]) == 32


def test_gateway_key_uses_its_own_credentials(settings, fake):
    gw_settings = {
        **settings,
        "allow_provider_keys": False,
        "keys": {"team-a": {"digest": key_digest("gw-secret"), "providers": {"openai": {"api_key": "sk-team-a"}}}},
    }
    client = create_app(gw_settings).test_client()
    ok = client.post(
        "/v1/responses",
        json={"model": "m", "input": "hi"},
        headers={"x-portkey-api-key": "gw-secret", "x-portkey-provider": "openai"},
    )
    assert ok.status_code == 200
    assert fake.requests[-1]["headers"]["Authorization"] == "Bearer sk-team-a"
    bad = client.post(
        "/v1/responses",
        json={"model": "m", "input": "hi"},
        headers={"x-portkey-api-key": "sk-not-configured", "x-portkey-provider": "openai"},
    )
    assert bad.status_code == 401
    assert bad.json["error"]["code"] == "invalid_api_key"


def test_gateway_key_without_credentials_for_a_provider_is_403(settings):
    client = create_app({**settings, "keys": {"t": {"digest": key_digest("gw")}}}).test_client()
    resp = client.post(
        "/v1/responses",
        json={"model": "m", "input": "hi"},
        headers={"x-portkey-api-key": "gw", "x-portkey-provider": "xai"},
    )
    assert resp.status_code == 403


def test_settings_layers(tmp_path):
    toml = tmp_path / "gw.toml"
    toml.write_text('workers = 3\nthreads = 8\n[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\napi = "chat"\n')
    env = {"GATEWAY_CONFIG": str(toml), "GATEWAY_THREADS": "12", "GATEWAY_PROVIDERS__AZURE_OPENAI__RESOURCE": "r1"}
    s = Settings.load({"workers": 5}, environ=env)
    assert (s.workers, s.threads) == (5, 12)
    assert s.providers["local"]["api"] == "chat"
    assert s.providers["azure-openai"]["resource"] == "r1"
    assert Settings.load(environ={}).bind == "127.0.0.1:8787"


@pytest.mark.parametrize(
    "bad", [{"workers": "many"}, {"nope": 1}, {"allow_provider_keys": "maybe"}, {"worker_class": "eventlet"}]
)
def test_bad_settings_are_refused_at_start(bad):
    with pytest.raises(SettingsError):
        Settings.load(bad, environ={})


def test_readme_documents_every_setting():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [name for name, _, _ in Settings.documented() if f"| `{name}` |" not in readme]
    assert not missing

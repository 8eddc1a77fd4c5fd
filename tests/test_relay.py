"""Unit tests of the relay with the ``responses`` library standing in for providers."""

from __future__ import annotations

import pytest
import requests
import responses

from gateway import create_app

UPSTREAM = "https://provider.test/v1"
HEADERS = {"Authorization": "Bearer sk-abc", "x-portkey-provider": "openai"}


@pytest.fixture
def client(tmp_path):
    app = create_app({"providers": {"openai": {"base_url": UPSTREAM}}, "store_url": f"sqlite:///{tmp_path}/s.db"})
    return app.test_client()


@responses.activate
def test_body_and_key_are_forwarded_unchanged(client):
    responses.post(UPSTREAM + "/responses", json={"id": "resp_1", "object": "response", "output": []})
    raw = b'{"model":"m","input":"hi","brand_new_field":{"x":1}}'
    resp = client.post("/v1/responses", data=raw, headers={**HEADERS, "Content-Type": "application/json"})
    assert resp.status_code == 200
    assert resp.json["id"] == "resp_1"
    sent = responses.calls[0].request
    assert sent.body == raw
    assert sent.headers["Authorization"] == "Bearer sk-abc"


@responses.activate
@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
def test_provider_error_keeps_status_and_body(client, status):
    body = {"error": {"message": "nope", "type": "x", "param": None, "code": "c"}}
    responses.post(UPSTREAM + "/responses", json=body, status=status, headers={"x-ratelimit-remaining-requests": "7"})
    resp = client.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=HEADERS)
    assert resp.status_code == status
    assert resp.json == body
    assert resp.headers["x-ratelimit-remaining-requests"] == "7"


@responses.activate
def test_non_json_provider_error_is_wrapped_in_the_error_shape(client):
    responses.post(UPSTREAM + "/responses", body="<html>Bad Gateway</html>", status=502, content_type="text/html")
    resp = client.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=HEADERS)
    assert resp.status_code == 502
    error = resp.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Bad Gateway" in error["message"] and error["type"] == "server_error"


@responses.activate
def test_success_that_is_not_json_is_a_502(client):
    responses.post(UPSTREAM + "/responses", body="not json", status=200)
    resp = client.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=HEADERS)
    assert resp.status_code == 502
    assert resp.json["error"]["code"] == "upstream_invalid_response"


@responses.activate
@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (requests.ConnectTimeout(), 504, "upstream_timeout"),
        (requests.ReadTimeout(), 504, "upstream_timeout"),
        (requests.ConnectionError("refused"), 502, "upstream_error"),
    ],
)
def test_transport_failures_are_translated(client, exc, status, code):
    responses.post(UPSTREAM + "/responses", body=exc)
    resp = client.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=HEADERS)
    assert resp.status_code == status
    assert resp.json["error"]["code"] == code
    assert "sk-abc" not in resp.get_data(as_text=True)


@responses.activate
def test_redirects_are_not_followed(client):
    responses.post(UPSTREAM + "/responses", status=307, headers={"Location": "https://evil.test/steal"})
    resp = client.post("/v1/responses", json={"model": "m", "input": "hi"}, headers=HEADERS)
    assert resp.status_code == 502
    assert resp.json["error"]["code"] == "upstream_redirect"
    assert len(responses.calls) == 1


@responses.activate
def test_read_endpoints_reach_the_right_paths(client):
    responses.get(UPSTREAM + "/responses/resp_1", json={"id": "resp_1"})
    responses.delete(UPSTREAM + "/responses/resp_1", json={"id": "resp_1", "deleted": True})
    responses.get(UPSTREAM + "/responses/resp_1/input_items", json={"object": "list", "data": []})
    assert client.get("/v1/responses/resp_1?include[]=a&include[]=b", headers=HEADERS).json == {"id": "resp_1"}
    assert client.delete("/v1/responses/resp_1", headers=HEADERS).json["deleted"] is True
    assert client.get("/v1/responses/resp_1/input_items?limit=5&after=msg_1", headers=HEADERS).status_code == 200
    assert responses.calls[0].request.url.endswith("/responses/resp_1?include%5B%5D=a&include%5B%5D=b")
    assert "limit=5" in responses.calls[2].request.url and "order=desc" in responses.calls[2].request.url


@responses.activate
def test_azure_uses_its_header_and_api_version(tmp_path):
    app = create_app({"providers": {"azure-openai": {"resource": "myres"}}, "store_url": f"sqlite:///{tmp_path}/s.db"})
    responses.post("https://myres.openai.azure.com/openai/responses", json={"id": "resp_1", "output": []})
    resp = app.test_client().post(
        "/v1/responses",
        json={"model": "m", "input": "hi"},
        headers={"Authorization": "Bearer az-key", "x-portkey-provider": "azure-openai"},
    )
    assert resp.status_code == 200
    sent = responses.calls[0].request
    assert sent.headers["api-key"] == "az-key" and "Authorization" not in sent.headers
    assert "api-version=" in sent.url

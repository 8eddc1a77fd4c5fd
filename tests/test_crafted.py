"""Crafted configs and bodies an attack review found: each a 4xx in the error shape, nothing sent upstream,
nothing stored changed. Hypothesis keeps running over routing headers and configs."""

from __future__ import annotations

import json
import socket

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.services import EXTENSION
from tests.conftest import KEY, Gunicorn

H = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}


def nest(depth: int, leaf: object = 1) -> object:
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return value


def to_json(value: object) -> bytes:
    """JSON text of any depth (the stdlib's and orjson's encoders both stop short of what parsers accept)."""
    if isinstance(value, dict):
        return b"{" + b",".join(to_json(str(k)) + b":" + to_json(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        depth = 0
        while isinstance(value, list) and len(value) == 1:
            value, depth = value[0], depth + 1
        if depth:
            return b"[" * depth + to_json(value) + b"]" * depth
        return b"[" + b",".join(to_json(v) for v in value) + b"]"
    return orjson.dumps(value)


def nested_config(depth: int) -> dict:
    node: dict = {"provider": "openai"}
    for _ in range(depth):
        node = {"strategy": {"mode": "fallback"}, "targets": [node]}
    return node


def _count(app) -> int:
    return app.extensions[EXTENSION].store.count()


# (name, provider, extra headers, body): every one must be refused before a provider is called.
CRAFTED = [
    ("config nested 200 levels", "openai", {"x-portkey-config": to_json(nested_config(200)).decode()}, None, 400),
    (
        "loadbalance weights of 1e308",
        "openai",
        {
            "x-portkey-config": json.dumps(
                {
                    "strategy": {"mode": "loadbalance"},
                    "targets": [{"provider": "openai", "weight": 1e308}, {"provider": "openai", "weight": 1e308}],
                }
            )
        },
        None,
        400,
    ),
    ("input nested 300 levels", "openai", {}, {"model": "m", "input": nest(300)}, 400),
    ("input nested 1,000 levels, emulated", "fakechat", {}, {"model": "m", "input": nest(1000)}, 400),
    ("extra field nested 300 levels, emulated", "fakechat", {}, {"model": "m", "input": "x", "extra": nest(300)}, 400),
    (
        "override_params nested 300 levels",
        "openai",
        {"x-portkey-config": to_json({"provider": "openai", "override_params": {"deep": nest(300)}}).decode()},
        None,
        400,
    ),
    ("metadata nested 255 levels", "openai", {}, {"model": "m", "input": "x", "metadata": {"a": nest(255)}}, 400),
]


@pytest.mark.parametrize(("name", "provider", "extra", "body", "status"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_inputs_are_refused_before_the_provider(app, client, fake, name, provider, extra, body, status):
    kept = client.post("/v1/responses", json={"model": "m", "input": "keep"}, headers=H).json
    before = client.get(f"/v1/responses/{kept['id']}", headers=H).json
    stored = _count(app)
    fake.requests.clear()
    raw = to_json(body or {"model": "m", "input": "hi"})
    headers = {**H, "x-portkey-provider": provider, **extra, "Content-Type": "application/json"}
    resp = client.post("/v1/responses", data=raw, headers=headers)
    assert resp.status_code == status, resp.get_data()[:300]
    error = resp.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] in ("nested_too_deep", "invalid_config", "invalid_value")
    assert fake.requests == []
    assert _count(app) == stored
    assert client.get(f"/v1/responses/{kept['id']}", headers=H).json == before


def test_a_deep_body_names_its_field(client, fake):
    resp = client.post("/v1/responses", json={"model": "m", "input": "x", "extra_field": nest(200)}, headers=H)
    assert resp.status_code == 400
    assert resp.json["error"]["param"] == "extra_field"
    assert "128" in resp.json["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/conversations", {"items": [{"role": "user", "content": "x", "deep": nest(300)}]}),
        ("POST", "/v1/conversations/conv_x", {"metadata": {"k": "v"}, "deep": nest(300)}),
        ("POST", "/v1/conversations/conv_x/items", {"items": [{"role": "user", "content": "x", "deep": nest(300)}]}),
        ("POST", "/v1/responses/compact", {"model": "m", "input": "x", "deep": nest(300)}),
        ("POST", "/v1/responses/input_tokens", {"model": "m", "input": "x", "deep": nest(300)}),
    ],
)
def test_every_json_endpoint_refuses_what_the_store_cannot_keep(client, fake, method, path, body):
    # Conversations stored such items until every JSON body was parsed through one checked door: a 500.
    resp = client.open(path, method=method, data=to_json(body), headers={**H, "Content-Type": "application/json"})
    assert resp.status_code == 400, resp.get_data()[:300]
    assert resp.json["error"]["code"] == "nested_too_deep"
    assert fake.requests == []


def test_a_body_just_under_the_limit_is_stored_and_read_back(client, fake):
    body = {"model": "m", "input": [{"role": "user", "content": "x", "deep": {"a": nest(100)}}]}
    resp = client.post("/v1/responses", json=body, headers=H)
    assert resp.status_code == 200, resp.json
    items = client.get(f"/v1/responses/{resp.json['id']}/input_items", headers=H).json["data"]
    assert items[0]["deep"] == {"a": nest(100)}


@pytest.mark.parametrize(
    "raw",
    [
        # The gateway reads the last value; the provider must see that same value, not the first.
        b'{"model": "m", "input": "x", "previous_response_id": "resp_someone_elses", "previous_response_id": null}',
        b'{"model": "m", "input": "x", "store": false, "store": true}',
    ],
)
def test_duplicate_keys_forward_what_was_checked(client, fake, raw):
    fake.requests.clear()
    resp = client.post("/v1/responses", data=raw, headers={**H, "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.json
    sent = fake.requests[-1]["body"]
    assert sent == orjson.loads(raw)
    # What the provider read is what the gateway checked and kept.
    assert client.get(f"/v1/responses/{resp.json['id']}", headers=H).status_code == 200


def test_duplicate_previous_response_id_is_checked_on_the_value_forwarded(client, fake):
    other = client.post(
        "/v1/responses", json={"model": "m", "input": "x"}, headers={**H, "Authorization": "Bearer sk-b"}
    )
    theirs = other.json["id"]
    raw = b'{"model": "m", "input": "x", "previous_response_id": null, "previous_response_id": "%s"}' % theirs.encode()
    fake.requests.clear()
    resp = client.post("/v1/responses", data=raw, headers={**H, "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "previous_response_not_found"
    assert fake.requests == []


@pytest.fixture(scope="module")
def small_gateway(gateway_env):
    server = Gunicorn({**gateway_env, "GATEWAY_MAX_BODY_BYTES": "2048"}, workers=1, threads=8)
    yield server
    server.stop()


def _raw_post(url: str, head: str, body_parts: list[bytes]) -> tuple[int, dict]:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:
                break  # the gateway answered and closed before reading it all: that is allowed
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _chunked(payload: bytes, size: int = 500) -> list[bytes]:
    parts = [
        b"%x\r\n%s\r\n" % (len(payload[i : i + size]), payload[i : i + size]) for i in range(0, len(payload), size)
    ]
    return [*parts, b"0\r\n\r\n"]


@pytest.mark.slow
def test_chunked_body_over_the_limit_is_413(small_gateway, fake):
    fake.requests.clear()
    # Valid JSON if cut at 2,048 bytes? No, but a prefix that parses must never be taken for the body:
    # here the first 2,048 bytes end inside a string, and the whole body is well-formed JSON.
    payload = orjson.dumps({"model": "m", "input": "x" * 5000})
    head = (
        "POST /v1/responses HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nx-portkey-provider: openai\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    status, body = _raw_post(small_gateway.url, head, _chunked(payload))
    assert status == 413
    assert "2048" in body["error"]["message"] and "max_body_bytes" in body["error"]["message"]
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert fake.requests == []


def test_chunked_body_under_the_limit_is_read_whole(small_gateway, fake):
    payload = orjson.dumps({"model": "m", "input": "y" * 300})
    head = (
        "POST /v1/responses HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\n"
        f"Authorization: Bearer {KEY}\r\nx-portkey-provider: openai\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    status, body = _raw_post(small_gateway.url, head, _chunked(payload, size=100))
    assert status == 200, body
    assert fake.requests[-1]["body"]["input"] == "y" * 300


def test_content_length_over_the_limit_names_limit_and_setting(small_gateway):
    import requests

    resp = requests.post(small_gateway.url + "/v1/responses", data=b"{" + b" " * 3000 + b"}", headers=H, timeout=10)
    assert resp.status_code == 413
    assert "2048" in resp.json()["error"]["message"] and "max_body_bytes" in resp.json()["error"]["message"]


json_leaf = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)
config_keys = st.sampled_from(
    ["provider", "strategy", "targets", "weight", "retry", "override_params", "api_key", "request_timeout", "mode"]
)
configs = st.recursive(
    st.dictionaries(config_keys, json_values, max_size=4),
    lambda inner: st.fixed_dictionaries(
        {"strategy": st.fixed_dictionaries({"mode": st.sampled_from(["single", "fallback", "loadbalance", "x"])})},
        optional={"targets": st.lists(inner, max_size=3), "weight": json_leaf},
    ),
    max_leaves=10,
)
deep = st.integers(1, 400).map(lambda d: nested_config(d))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    config=configs | deep | json_values,
    # Header values a client can send at all: no control characters (test clients refuse those first).
    provider=st.sampled_from(["openai", "fakechat", "", "nope"])
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    custom_host=st.sampled_from(["", "http://127.0.0.1:1", "file:///etc/passwd"]),
    depth=st.integers(1, 400),
)
@pytest.mark.slow
def test_any_routing_headers(app, client, fake, config, provider, custom_host, depth):
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-config": to_json(config).decode()}
    if provider:
        headers["x-portkey-provider"] = provider
    if custom_host:
        headers["x-portkey-custom-host"] = custom_host
    try:
        headers["x-portkey-config"].encode("latin-1")
    except UnicodeEncodeError:
        headers["x-portkey-config"] = json.dumps(orjson.loads(headers["x-portkey-config"]))
    resp = client.post(
        "/v1/responses", json={"model": "m", "input": "x", "metadata": {"d": nest(depth)}}, headers=headers
    )
    assert resp.status_code < 500 or resp.status_code in (502, 504), resp.get_data()[:300]
    if resp.status_code >= 400:
        assert set(resp.json["error"]) == {"message", "type", "param", "code"}

"""Compaction and token counts on every path: the provider's own, and the gateway's where it has none."""

from __future__ import annotations

import pytest

from gateway import create_app
from gateway.compaction import PREFIX, SUMMARY_HEADER
from tests.conftest import KEY, close_app

CHAT = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"}
NATIVE = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
OTHER = {"Authorization": "Bearer sk-someone-else", "x-portkey-provider": "fakechat"}


@pytest.fixture
def settings(fake, tmp_path):
    return {
        "providers": {
            "openai": {"base_url": fake.url},
            "fakechat": {"base_url": fake.url, "api": "chat"},
            "fakenative": {"base_url": fake.url, "api": "responses"},  # a Responses API without compaction
            "fakeanthropic": {
                "base_url": fake.url,
                "api": "chat",
                "count_tokens": "anthropic",
                "count_tokens_url": fake.url + "/messages/count_tokens",
            },
            "fakegemini": {
                "base_url": fake.url,
                "api": "chat",
                "count_tokens": "gemini",
                "count_tokens_url": fake.url + "/models/{model}:countTokens",
            },
        },
        "store_url": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "key_salt": "test-salt",
    }


def _compact(client, headers=CHAT, **body):
    return client.post("/v1/responses/compact", json={"model": "m", **body}, headers=headers)


def _sent(fake, path: str) -> list[dict]:
    return [r["body"] for r in fake.requests if r["path"].endswith(path)]


def test_the_gateway_compacts_for_a_provider_without_compaction(client, fake):
    resp = _compact(client, input=[{"role": "user", "content": "My name is Ada."}])
    assert resp.status_code == 200, resp.json
    data = resp.json
    assert data["object"] == "response.compaction" and data["usage"]["total_tokens"] > 0
    [item] = data["output"]
    assert item["type"] == "compaction" and item["encrypted_content"].startswith(PREFIX)
    assert "Ada" not in item["encrypted_content"]  # opaque to the client
    [asked] = _sent(fake, "/chat/completions")
    assert asked["messages"][0] == {"role": "user", "content": "My name is Ada."}
    assert "Summarise the conversation" in asked["messages"][-1]["content"]

    # The item round-trips: a later request's input carries it, the provider gets the summary.
    fake.reset()
    turn = client.post(
        "/v1/responses", json={"model": "m", "input": [item, {"role": "user", "content": "Who am I?"}]}, headers=CHAT
    )
    assert turn.status_code == 200, turn.json
    [sent] = _sent(fake, "/chat/completions")
    summary = sent["messages"][0]
    assert summary["role"] == "system" and summary["content"].startswith(SUMMARY_HEADER)
    assert "Summarise the conversation" in summary["content"]  # the fake echoes what it was asked
    # ... and a native provider gets it expanded too, never the sealed item.
    fake.reset()
    assert client.post("/v1/responses", json={"model": "m", "input": [item]}, headers=NATIVE).status_code == 200
    [sent] = _sent(fake, "/responses")
    assert sent["input"][0]["role"] == "developer" and sent["input"][0]["content"].startswith(SUMMARY_HEADER)


def test_a_tampered_or_foreign_compaction_item_is_a_400(client, fake, settings, tmp_path):
    item = _compact(client, input="hello").json["output"][0]
    token = item["encrypted_content"]
    flipped = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    cases = [
        (CHAT, {**item, "encrypted_content": flipped}),
        (CHAT, {**item, "encrypted_content": PREFIX + "not-base64!"}),
        (OTHER, item),  # another tenant's
        (NATIVE, {**item, "encrypted_content": flipped}),
    ]
    other_deployment = create_app({**settings, "store_url": f"sqlite:///{tmp_path / 'other.sqlite3'}"})
    try:
        foreign = other_deployment.test_client()
        for headers, bad in cases:
            for c in (client, foreign) if bad is item else (client,):
                fake.reset()
                resp = c.post("/v1/responses", json={"model": "m", "input": [bad]}, headers=headers)
                assert resp.status_code == 400, resp.json
                assert resp.json["error"]["code"] == "invalid_compaction"
                assert resp.json["error"]["param"] == "input[0].encrypted_content"
                assert fake.requests == []  # refused before any provider call
        resp = foreign.post("/v1/responses", json={"model": "m", "input": [item]}, headers=CHAT)
        assert resp.status_code == 400 and resp.json["error"]["code"] == "invalid_compaction"
    finally:
        close_app(other_deployment)


def test_compaction_is_passed_through_where_the_provider_has_it(client, fake):
    resp = _compact(client, headers=NATIVE, input="hello")
    assert resp.status_code == 200
    assert resp.json["output"][0]["encrypted_content"].startswith("fake-compaction:")
    assert _sent(fake, "/responses/compact") == [{"model": "m", "input": "hello"}]


TRIGGERED = [{"role": "user", "content": "My name is Ada."}, {"type": "compaction_trigger"}]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("provider", ["fakechat", "fakenative"])
def test_a_compaction_trigger_answers_one_compaction_item_made_by_the_gateway(client, fake, provider, stream):
    from tests import strict_types as strict

    headers = {**CHAT, "x-portkey-provider": provider}
    resp = client.post("/v1/responses", json={"model": "m", "input": TRIGGERED, "stream": stream}, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    if stream:
        events = strict.sse_events(resp.get_data(as_text=True))
        assert "response.compaction.compacting" in [e["type"] for e in events]
        made = strict.response(strict.stream(events))
    else:
        made = strict.response(resp.json)
    [item] = made.output
    assert made.status == "completed" and made.usage.total_tokens > 0
    assert item.type == "compaction" and item.encrypted_content.startswith(PREFIX)
    [asked] = _sent(fake, "/chat/completions")  # the summary, asked over Chat Completions
    assert asked["messages"][0] == {"role": "user", "content": "My name is Ada."}
    assert _sent(fake, "/responses") == []

    # The next turn starts from the summary: the provider gets it, not the turns it replaced.
    fake.reset()
    after = client.post(
        "/v1/responses", json={"model": "m", "input": "Who am I?", "previous_response_id": made.id}, headers=headers
    )
    assert after.status_code == 200, after.json
    [sent] = _sent(fake, "/chat/completions" if provider == "fakechat" else "/responses")
    first = sent["messages"][0] if provider == "fakechat" else sent["input"][0]
    assert first["content"].startswith(SUMMARY_HEADER) and "My name is Ada." not in str(sent)


def test_a_compaction_trigger_goes_to_a_provider_that_compacts_itself_and_must_be_last(client, fake):
    assert client.post("/v1/responses", json={"model": "m", "input": TRIGGERED}, headers=NATIVE).status_code == 200
    [sent] = _sent(fake, "/responses")
    assert sent["input"][-1] == {"type": "compaction_trigger"}
    fake.reset()
    wrong = client.post("/v1/responses", json={"model": "m", "input": TRIGGERED[::-1]}, headers=CHAT)
    assert wrong.status_code == 400 and wrong.json["error"]["param"] == "input[0]"
    assert fake.requests == []


def test_compaction_of_a_conversation_and_of_a_previous_response(client, fake):
    conv = client.post("/v1/conversations", json={"items": [{"role": "user", "content": "one"}]}, headers=CHAT).json
    client.post("/v1/responses", json={"model": "m", "input": "two", "conversation": conv["id"]}, headers=CHAT)
    fake.reset()
    assert _compact(client, conversation=conv["id"]).status_code == 200
    [asked] = _sent(fake, "/chat/completions")
    assert [m["content"] for m in asked["messages"][:3]] == ["one", "two", "Echo 2: two"]
    first = client.post("/v1/responses", json={"model": "m", "input": "three"}, headers=CHAT).json
    fake.reset()
    assert _compact(client, headers=NATIVE, previous_response_id=first["id"]).status_code == 200
    # An emulated response is unknown to the native provider: its history goes inline.
    [sent] = _sent(fake, "/responses/compact")
    assert "previous_response_id" not in sent and len(sent["input"]) == 2


def test_context_management_compacts_a_conversation_past_its_threshold(client, fake):
    conv = client.post("/v1/conversations", json={}, headers=CHAT).json["id"]
    policy = [{"type": "compaction", "compact_threshold": 70}]  # about two turns of these
    for n in range(1, 4):
        fake.reset()
        body = {"model": "m", "input": f"turn {n} " + "words " * 10, "conversation": conv, "context_management": policy}
        resp = client.post("/v1/responses", json=body, headers=CHAT)
        assert resp.status_code == 200, resp.json
        chats = _sent(fake, "/chat/completions")
        assert all("context_management" not in c for c in chats)
    # Turn 3's context was past the threshold: a summary first, then the turn on it.
    summary_call, turn_call = chats
    assert "Summarise the conversation" in summary_call["messages"][-1]["content"]
    assert turn_call["messages"][0]["content"].startswith(SUMMARY_HEADER)
    assert [m["role"] for m in turn_call["messages"]] == ["system", "user"]
    items = client.get(f"/v1/conversations/{conv}/items?order=asc&limit=100", headers=CHAT).json["data"]
    assert [i["type"] for i in items] == ["message"] * 4 + ["compaction", "message", "message"]
    # The next turn starts from the compaction item, not from the turns before it.
    fake.reset()
    client.post("/v1/responses", json={"model": "m", "input": "four", "conversation": conv}, headers=CHAT)
    [sent] = _sent(fake, "/chat/completions")
    assert sent["messages"][0]["content"].startswith(SUMMARY_HEADER) and len(sent["messages"]) == 4


def test_context_management_goes_to_a_provider_that_compacts_itself(client, fake):
    policy = [{"type": "compaction", "compact_threshold": 1}]
    resp = client.post(
        "/v1/responses", json={"model": "m", "input": "hi", "context_management": policy}, headers=NATIVE
    )
    assert resp.status_code == 200
    assert _sent(fake, "/responses")[0]["context_management"] == policy


# ------------------------------------------------------------------------------------------ token counts
def _count(client, provider: str, **body):
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": provider}
    return client.post("/v1/responses/input_tokens", json=body, headers=headers)


def test_tokens_counted_by_the_provider_that_has_the_endpoint(client, fake):
    resp = _count(client, "openai", model="gpt-4o", input="hello there")
    assert resp.status_code == 200 and resp.json["object"] == "response.input_tokens"
    assert resp.headers["x-gateway-token-count"] == "provider"
    assert _sent(fake, "/responses/input_tokens") == [{"model": "gpt-4o", "input": "hello there"}]


@pytest.mark.parametrize(
    ("provider", "path", "auth"),
    [
        ("fakeanthropic", "/messages/count_tokens", "x-api-key"),
        ("fakegemini", "/models/claude-x:countTokens", "x-goog-api-key"),
    ],
)
def test_tokens_counted_by_a_provider_endpoint_of_its_own(client, fake, provider, path, auth):
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    resp = _count(client, provider, model="claude-x", instructions="Be brief.", input="hello there", tools=tools)
    assert resp.status_code == 200, resp.json
    assert resp.headers["x-gateway-token-count"] == "provider" and resp.json["input_tokens"] > 0
    [request] = [r for r in fake.requests if r["path"].endswith(path)]
    assert request["headers"][auth] == KEY
    text = str(request["body"])
    assert "Be brief." in text and "hello there" in text and "lookup" in text


def test_tokens_counted_offline_elsewhere_and_marked_as_estimates(client, fake):
    resp = _count(client, "fakechat", model="gpt-4o", input="hello world")
    assert resp.status_code == 200 and resp.headers["x-gateway-token-count"] == "estimate"
    # "hello world" is 2 tokens in o200k_base; a message's framing 3, its role 1, the reply's priming 3.
    assert resp.json == {"object": "response.input_tokens", "input_tokens": 9}
    assert fake.requests == []  # nothing asked of the provider
    assert _count(client, "fakechat", model="some-llama", input="hello world").json["input_tokens"] == 9


def test_token_counts_include_the_stored_context(client):
    conv = client.post("/v1/conversations", json={"items": [{"role": "user", "content": "a b c"}]}, headers=CHAT).json
    alone = _count(client, "fakechat", model="gpt-4o", input="hello").json["input_tokens"]
    with_conv = _count(client, "fakechat", model="gpt-4o", input="hello", conversation=conv["id"]).json["input_tokens"]
    assert with_conv > alone
    first = client.post("/v1/responses", json={"model": "m", "input": "a b c"}, headers=CHAT).json
    chained = _count(client, "fakechat", model="gpt-4o", input="hello", previous_response_id=first["id"]).json
    assert chained["input_tokens"] > with_conv  # the answer counts too
    assert _count(client, "fakechat", model="gpt-4o", conversation="conv_missing").status_code == 404

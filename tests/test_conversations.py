"""Conversations, the gateway's own for every provider, driven by the openai SDK (strict) through gunicorn:
every conversations and items method, turns on an emulated and a native provider and across a switch,
tenant isolation, and what is refused.
"""

from __future__ import annotations

import openai
import pytest
import requests
from openai._models import validate_type
from openai.types.conversations import Conversation, ConversationItem

from tests import strict_types as strict
from tests.conftest import KEY

OTHER_KEY = "sk-another-tenant"


@pytest.fixture
def sdk(gateway):
    """A strict client per provider: every answer validated against the SDK's types."""
    clients = []

    def make(provider: str | None = "fakechat", api_key: str = KEY) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=gateway.url + "/v1",
            api_key=api_key,
            max_retries=0,
            default_headers={"x-portkey-provider": provider} if provider else None,
            _strict_response_validation=True,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _texts(items) -> list[str]:
    return [part.text for item in items if item.type == "message" for part in item.content]


@pytest.mark.slow
def test_every_conversations_and_items_method(sdk):
    client = sdk(provider=None)  # no provider is involved in these endpoints
    conv = client.conversations.create(
        items=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        metadata={"topic": "greetings"},
    )
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "greetings"}
    assert client.conversations.retrieve(conv.id) == conv
    updated = client.conversations.update(conv.id, metadata={"topic": "farewells"})
    assert updated.metadata == {"topic": "farewells"} and updated.id == conv.id

    added = client.conversations.items.create(
        conv.id,
        items=[
            {"type": "message", "role": "assistant", "content": "Hi there."},
            {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "found"},
        ],
    )
    assert [i.type for i in added.data] == ["message", "function_call", "function_call_output"]
    assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id

    everything = list(client.conversations.items.list(conv.id, limit=2, order="asc"))  # three pages
    assert [i.type for i in everything] == ["message", "message", "message", "function_call", "function_call_output"]
    assert _texts(everything) == ["Be brief.", "Hello", "Hi there."]
    newest_first = list(client.conversations.items.list(conv.id, include=["message.output_text.logprobs"]))
    assert [i.id for i in newest_first] == [i.id for i in reversed(everything)]
    page = client.conversations.items.list(conv.id, limit=1, after=everything[1].id, order="asc")
    assert [i.id for i in page.data] == [everything[2].id] and page.has_more

    one = client.conversations.items.retrieve(everything[2].id, conversation_id=conv.id)
    assert one.id == everything[2].id and one.content[0].type == "output_text"
    after_delete = client.conversations.items.delete(everything[2].id, conversation_id=conv.id)
    assert isinstance(after_delete, Conversation) and after_delete.id == conv.id
    assert len(list(client.conversations.items.list(conv.id))) == 4
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(everything[2].id, conversation_id=conv.id)

    deleted = client.conversations.delete(conv.id)
    assert deleted.deleted and deleted.id == conv.id and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)


def _turn(client: openai.OpenAI, conv_id: str, text: str, stream: bool):
    if not stream:
        return client.responses.create(model="m", input=text, conversation=conv_id)
    events = list(client.responses.create(model="m", input=text, conversation={"id": conv_id}, stream=True))
    for event in events:
        if getattr(event, "response", None) is not None:
            assert event.response.conversation.id == conv_id
    if client.default_headers["x-portkey-provider"] == "fakechat":  # the gateway's own events: the full check
        strict.stream([e.model_dump(mode="json", exclude_unset=True, by_alias=True) for e in events])
    assert events[-1].type == "response.completed"
    return events[-1].response


def test_turns_on_one_conversation_across_providers_streamed_and_not(sdk, fake):
    chat, native = sdk("fakechat"), sdk("openai")
    conv = chat.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    plan = [(chat, False), (native, True), (chat, True), (native, False)]
    responses = []
    for n, (client, stream) in enumerate(plan, start=1):
        fake.reset()
        response = _turn(client, conv.id, f"turn {n}", stream)
        responses.append(response)
        assert response.conversation.id == conv.id
        sent = fake.requests[-1]["body"]
        assert "conversation" not in sent  # a provider never sees an id it cannot know
        if client is chat:
            users = [m["content"] for m in sent["messages"] if m["role"] == "user"]
            assert users == ["My name is Ada.", *[f"turn {i}" for i in range(1, n + 1)]]
            assert response.output_text == f"Echo {n + 1}: turn {n}"
        else:
            # The whole conversation as input items, the previous turns' answers among them.
            assert len(sent["input"]) == 1 + 2 * (n - 1) + 1
            assert "previous_response_id" not in sent
    items = list(chat.conversations.items.list(conv.id, order="asc", limit=100))
    assert len(items) == 1 + 2 * len(plan)
    texts = _texts(items)
    assert texts[0] == "My name is Ada." and texts[1::2] == [f"turn {n}" for n in range(1, 5)]
    assert [i.id for i in items[2::2]] == [r.output[0].id for r in responses]
    for response in responses:  # each turn is a stored response too, named with its conversation
        again = chat.responses.retrieve(response.id)
        assert again.conversation.id == conv.id


def test_a_failed_turn_adds_nothing(sdk, fake):
    chat, native = sdk("fakechat"), sdk("openai")
    conv = chat.conversations.create()
    chat.responses.create(model="m", input="first", conversation=conv.id)
    fake.knobs["status"] = 500
    for client in (chat, native):
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model="m", input="lost", conversation=conv.id)
    fake.knobs.clear()
    # A stream the provider breaks off ends failed: nothing of it joins the conversation.
    fake.knobs["cut_after"] = 6
    with pytest.raises(openai.APIError):
        list(native.responses.create(model="m", input="cut", conversation=conv.id, stream=True))
    fake.knobs.clear()
    assert _texts(chat.conversations.items.list(conv.id, order="asc")) == ["first", "Echo 1: first"]


def test_conversation_with_previous_response_id_is_refused(sdk):
    client = sdk("fakechat")
    conv = client.conversations.create()
    first = client.responses.create(model="m", input="hi")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="m", input="x", conversation=conv.id, previous_response_id=first.id)
    assert info.value.code == "mutually_exclusive_parameters"


def test_store_false_turns_still_join_their_conversation(sdk):
    client = sdk("openai")
    conv = client.conversations.create()
    response = client.responses.create(model="m", input="unstored", conversation=conv.id, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    assert _texts(client.conversations.items.list(conv.id, order="asc")) == ["unstored", "Echo 1: unstored"]


@pytest.mark.parametrize("provider", ["fakechat", "openai"])
def test_another_tenant_sees_nothing(sdk, provider):
    mine, theirs = sdk(provider), sdk(provider, api_key=OTHER_KEY)
    conv = mine.conversations.create(items=[{"role": "user", "content": "secret"}])
    item = next(iter(mine.conversations.items.list(conv.id)))
    calls = [
        lambda c: c.conversations.retrieve(conv.id),
        lambda c: c.conversations.update(conv.id, metadata={"x": "y"}),
        lambda c: c.conversations.delete(conv.id),
        lambda c: c.conversations.items.list(conv.id),
        lambda c: c.conversations.items.create(conv.id, items=[{"role": "user", "content": "in"}]),
        lambda c: c.conversations.items.retrieve(item.id, conversation_id=conv.id),
        lambda c: c.conversations.items.delete(item.id, conversation_id=conv.id),
        lambda c: c.responses.create(model="m", input="x", conversation=conv.id),
        lambda c: c.responses.input_tokens.count(model="m", input="x", conversation=conv.id),
        lambda c: c.responses.compact(model="m", input="x", extra_body={"conversation": conv.id}),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as info:
            call(theirs)
        assert info.value.message.endswith(f"Conversation with id '{conv.id}' not found.")
    # ... and nothing changed for the owner.
    assert mine.conversations.retrieve(conv.id).metadata == {}
    assert [i.id for i in mine.conversations.items.list(conv.id)] == [item.id]


def test_items_listed_validate_as_conversation_items(sdk):
    client = sdk("fakechat")
    conv = client.conversations.create(items=[{"role": "user", "content": [{"type": "input_text", "text": "a"}]}])
    client.responses.create(model="m", input="b", conversation=conv.id)
    raw = requests.get(
        f"{client.base_url}conversations/{conv.id}/items",
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    ).json()
    assert set(raw) == {"object", "data", "first_id", "last_id", "has_more"}
    for item in raw["data"]:
        validate_type(type_=ConversationItem, value=item)


BAD = [
    ("post", "/v1/conversations", {"items": "nope"}, 400, "items"),
    ("post", "/v1/conversations", {"items": [1]}, 400, "items[0]"),
    ("post", "/v1/conversations", {"items": [{"role": "user", "content": "x"}] * 21}, 400, "items"),
    ("post", "/v1/conversations", {"metadata": {"k": 1}}, 400, "metadata.k.value"),
    ("post", "/v1/conversations", {"metadata": {str(i): "v" for i in range(17)}}, 400, "metadata"),
    ("post", "/v1/conversations", {"unknown": 1}, 400, "unknown"),
    ("post", "/v1/conversations", {"items": [{"type": "item_reference", "id": "msg_nope"}]}, 400, "items[0]"),
    ("post", "/v1/conversations", [], 400, None),
    ("post", "/v1/conversations/{conv}", {}, 400, "metadata"),
    ("post", "/v1/conversations/{conv}/items", {"items": []}, 400, "items"),
    ("post", "/v1/conversations/{conv}/items", {}, 400, "items"),
    (
        "post",
        "/v1/conversations/{conv}/items",
        {"items": [{"type": "compaction", "encrypted_content": "gwc1.AAAA"}]},
        400,
        "items[0].encrypted_content",
    ),
    ("get", "/v1/conversations/{conv}/items?limit=0", None, 400, "limit"),
    ("get", "/v1/conversations/{conv}/items?limit=101", None, 400, "limit"),
    ("get", "/v1/conversations/{conv}/items?order=up", None, 400, "order"),
    ("get", "/v1/conversations/{conv}/items?bogus=1", None, 400, "bogus"),
    ("get", "/v1/conversations/conv_missing", None, 404, None),
    ("get", "/v1/conversations/bad%20id", None, 400, "conversation_id"),
    ("get", "/v1/conversations/{conv}/items/msg_missing", None, 404, "item_id"),
    ("delete", "/v1/conversations/{conv}/items/msg_missing", None, 404, "item_id"),
    ("post", "/v1/responses", {"model": "m", "input": "x", "conversation": {"nope": 1}}, 400, "conversation"),
    ("post", "/v1/responses", {"model": "m", "input": "x", "conversation": "conv_missing"}, 404, "conversation"),
    ("post", "/v1/responses/compact", {"input": "x"}, 400, "model"),
    ("post", "/v1/responses/compact", {"model": "m", "input": 3}, 400, "input"),
    ("post", "/v1/responses/compact", {"model": "m"}, 400, None),
    ("post", "/v1/responses/input_tokens", {"input": [1]}, 400, "input[0]"),
    (
        "post",
        "/v1/responses/input_tokens",
        {"model": "m", "previous_response_id": "resp_nope"},
        400,
        "previous_response_id",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "param"), BAD)
def test_bad_input_is_a_4xx_in_the_error_shape(gateway, method, path, body, status, param):
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"}
    conv = requests.post(f"{gateway.url}/v1/conversations", json={}, headers=headers, timeout=10).json()["id"]
    resp = requests.request(method, gateway.url + path.replace("{conv}", conv), json=body, headers=headers, timeout=10)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["fakechat", "openai"])
def test_compact_and_count_on_a_conversation_with_the_strict_sdk(sdk, provider):
    client = sdk(provider)
    conv = client.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    client.responses.create(model="m", input="Remember it.", conversation=conv.id)
    compacted = client.responses.compact(model="m", extra_body={"conversation": conv.id})
    assert compacted.output[-1].type == "compaction"
    counted = client.responses.input_tokens.count(model="gpt-4o", input="Who am I?", conversation=conv.id)
    alone = client.responses.input_tokens.count(model="gpt-4o", input="Who am I?")
    assert counted.input_tokens > alone.input_tokens
    # A fresh conversation started from the compaction carries on from it.
    fresh = client.conversations.create(items=[compacted.output[-1].model_dump(exclude_none=True)])
    answer = client.responses.create(model="m", input="Who am I?", conversation=fresh.id)
    assert answer.conversation.id == fresh.id

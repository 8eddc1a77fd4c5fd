"""``truncation: "auto"``: a conversation that outgrows a small-window model loses its oldest turns on the way
to the provider, never the instructions or the newest turn, and keeps every item in the store.
"""

from __future__ import annotations

import json

import openai
import pytest
import requests

from gateway.extensions.truncation import cuts
from gateway.providers import Catalogue, CatalogueError
from gateway.startup import StartupError, check
from gateway.tokens import count_offline
from tests import strict_types as strict
from tests.conftest import KEY, Gunicorn

CHAT = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"}
NATIVE = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakenative"}
WINDOW = 400  # "small"'s window: about five turns of these, with the room kept for the answer
RESERVE = WINDOW // 4  # kept for the answer when max_output_tokens is not given
INSTRUCTIONS = "Answer in one line."
LOOKUP = {
    "type": "function",
    "name": "lookup",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


@pytest.fixture
def settings(fake, tmp_path):
    window = {"small": WINDOW}  # "big" has no window known: nothing is ever left out for it
    return {
        "providers": {
            "fakechat": {"base_url": fake.url, "api": "chat", "context_window": window},
            "fakenative": {"base_url": fake.url, "api": "responses", "context_window": window},
        },
        "store_url": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "key_salt": "test-salt",
    }


def say(n: int) -> str:
    return f"turn {n}: " + "lorem " * 20


def _sent(fake, path: str = "/chat/completions") -> list[dict]:
    return [r["body"] for r in fake.requests if r["path"].endswith(path)]


def _users(chat: dict) -> list[str]:
    return [m["content"] for m in chat["messages"] if m["role"] == "user"]


def _create(client, headers=CHAT, **body) -> dict:
    resp = client.post("/v1/responses", json={"model": "small", "instructions": INSTRUCTIONS, **body}, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json


def _fits(chat: dict) -> bool:
    return count_offline("small", chat)[0] + RESERVE <= WINDOW


def _assert_paired(chat: dict) -> None:
    """Every call the provider is sent has its output, and every output its call."""
    calls = [c["id"] for m in chat["messages"] for c in m.get("tool_calls") or []]
    outputs = [m["tool_call_id"] for m in chat["messages"] if m["role"] == "tool"]
    assert sorted(calls) == sorted(outputs), chat["messages"]


def _assert_least_left_out(truncated: dict, whole: dict) -> None:
    """``truncated`` is ``whole`` without its oldest turns: as many as needed to fit the window, no more."""
    assert truncated["messages"][0] == whole["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    kept = truncated["messages"][1:]
    assert kept and whole["messages"][-len(kept) :] == kept and kept[0]["role"] == "user"
    assert _fits(truncated) and not _fits(whole)
    # The turn before the first one sent would not have fitted too.
    turn_starts = [i for i, m in enumerate(whole["messages"]) if m["role"] == "user"]
    first_kept = len(whole["messages"]) - len(kept)
    one_more = turn_starts[turn_starts.index(first_kept) - 1]
    assert not _fits({**whole, "messages": whole["messages"][:1] + whole["messages"][one_more:]})


# ------------------------------------------------------------------------------------ emulated provider
def test_a_chain_that_outgrows_the_window_loses_its_oldest_turns_not_the_newest(client, fake):
    prev, first_sent = None, []
    for n in range(1, 9):
        fake.reset()
        made = _create(client, input=say(n), truncation="auto", **_after(prev))
        assert made["truncation"] == "auto"
        [chat] = _sent(fake)
        assert chat["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
        assert chat["messages"][-1] == {"role": "user", "content": say(n)}
        assert _fits(chat) and "truncation" not in chat
        first_sent.append(_users(chat)[0])
        prev = made["id"]
    assert first_sent[:5] == [say(1)] * 5  # while it fits, everything is sent
    assert first_sent[-1] != say(1)

    # The same turn with truncation disabled sends it all: exactly what was left out is missing above.
    fake.reset()
    _create(client, input=say(8), truncation="disabled", previous_response_id=_previous(client, prev))
    [whole] = _sent(fake)
    assert _users(whole) == [say(n) for n in range(1, 9)]
    fake.reset()
    _create(client, input=say(8), truncation="auto", previous_response_id=_previous(client, prev))
    [truncated] = _sent(fake)
    _assert_least_left_out(truncated, whole)

    # What is stored is whole: the response says auto, each turn's input is listed as it was sent, and a
    # later turn on a model with no window known is sent every turn.
    stored = client.get(f"/v1/responses/{prev}", headers=CHAT).json
    assert stored["truncation"] == "auto" and stored["previous_response_id"] is not None
    listed = client.get(f"/v1/responses/{prev}/input_items", headers=CHAT).json
    strict.items_page(listed)
    assert [i["content"][0]["text"] for i in listed["data"]] == [say(8)]
    fake.reset()
    later = _create(client, model="big", input=say(9), truncation="auto", previous_response_id=prev)
    assert later["truncation"] == "auto"
    assert _users(_sent(fake)[0]) == [say(n) for n in range(1, 10)]


def _previous(client, response_id: str) -> str:
    return client.get(f"/v1/responses/{response_id}", headers=CHAT).json["previous_response_id"]


def test_a_conversation_that_outgrows_the_window_loses_its_oldest_turns(client, fake):
    conv = client.post("/v1/conversations", json={}, headers=CHAT).json["id"]
    for n in range(1, 9):
        fake.reset()
        made = _create(client, input=say(n), truncation="auto", conversation=conv)
        assert made["truncation"] == "auto" and made["conversation"] == {"id": conv}
        [chat] = _sent(fake)
        assert chat["messages"][-1] == {"role": "user", "content": say(n)} and _fits(chat)
    assert _users(chat)[0] != say(1) and chat["messages"][0]["content"] == INSTRUCTIONS
    # The conversation keeps every item: the next turn, disabled, is sent all of them.
    items = client.get(f"/v1/conversations/{conv}/items?order=asc&limit=100", headers=CHAT).json["data"]
    assert [i["role"] for i in items] == ["user", "assistant"] * 8
    fake.reset()
    _create(client, input=say(9), conversation=conv)
    assert _users(_sent(fake)[0]) == [say(n) for n in range(1, 10)]


def test_a_call_and_its_output_are_left_out_together_or_kept_together(client, fake):
    # An old turn with a tool call and its output, then plain turns until the window is outgrown.
    called = _create(client, input=say(1), tools=[LOOKUP], truncation="auto")
    [call] = called["output"]
    assert call["type"] == "function_call"
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "lorem " * 10}
    prev = _create(client, input=[output], truncation="auto", previous_response_id=called["id"])["id"]
    for n in range(2, 9):
        fake.reset()
        made = _create(client, input=say(n), tools=[LOOKUP], tool_choice="none", truncation="auto", **_after(prev))
        prev = made["id"]
        [chat] = _sent(fake)
        _assert_paired(chat)
    assert _users(chat)[0] != say(1) and not any(m["role"] == "tool" for m in chat["messages"])

    # The newest turn answers a call: its call and the turn that asked for it are sent, whatever else goes.
    fake.reset()
    asked = _create(client, input=say(9), tools=[LOOKUP], truncation="auto", previous_response_id=prev)
    [call] = asked["output"]
    fake.reset()
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "lorem " * 200}
    answered = _create(client, input=[output], truncation="auto", previous_response_id=asked["id"])
    assert answered["output"][0]["content"][0]["text"].startswith("Tool said")
    [chat] = _sent(fake)
    _assert_paired(chat)
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool"]
    assert _users(chat) == [say(9)]


def _after(prev: str | None) -> dict:
    return {"previous_response_id": prev} if prev else {}


@pytest.mark.parametrize(
    ("model", "truncation"),
    [("small", "disabled"), ("small", None), ("big", "auto")],
    ids=["disabled", "absent", "no-window-known"],
)
def test_disabled_absent_or_no_window_known_sends_everything(client, fake, model, truncation):
    prev = None
    for n in range(1, 9):
        fake.reset()
        body = {"input": say(n), "model": model, **_after(prev)}
        if truncation:
            body["truncation"] = truncation
        made = _create(client, **body)
        prev = made["id"]
    assert made["truncation"] == (truncation or "disabled")
    [chat] = _sent(fake)
    assert _users(chat) == [say(n) for n in range(1, 9)]


def test_a_newest_turn_too_big_alone_is_sent_whole_for_the_provider_to_answer(client, fake):
    prev = _create(client, input=say(1), truncation="auto")["id"]
    fake.reset()
    huge = "lorem " * 1000
    _create(client, input=huge, truncation="auto", previous_response_id=prev)
    [chat] = _sent(fake)
    # Every older turn is left out, the instructions and the newest turn never: the provider's context
    # error (a real one's; the fake answers anything) is the caller's answer.
    assert chat["messages"] == [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": huge}]


def test_max_output_tokens_is_the_room_kept_for_the_answer(client, fake):
    prev = None
    for n in range(1, 5):
        prev = _create(client, input=say(n), **_after(prev))["id"]
    fake.reset()
    # Four turns and this one fit with the default room (a quarter of the window), not with 250 tokens.
    _create(client, input=say(5), truncation="auto", previous_response_id=prev)
    _create(client, input=say(5), truncation="auto", previous_response_id=prev, max_output_tokens=250)
    roomy, tight = _sent(fake)
    assert len(_users(roomy)) == 5 and 1 <= len(_users(tight)) < 5
    assert count_offline("small", tight)[0] + 250 <= WINDOW


# ------------------------------------------------------------------------------------------ native provider
def test_a_native_provider_continuing_by_id_is_sent_truncation_and_truncates_itself(client, fake):
    prev = None
    for n in range(1, 9):
        fake.reset()
        made = _create(client, NATIVE, input=say(n), truncation="auto", **_after(prev))
        # The provider holds the history: it is sent this turn's input and truncation, as the client sent them.
        [sent] = _sent(fake, "/responses")
        assert sent["truncation"] == "auto" and sent["input"] == say(n)
        assert sent.get("previous_response_id") == prev
        assert made["truncation"] == "disabled"  # what the provider said (the fake's): passed through
        prev = made["id"]


def test_a_native_provider_sent_the_history_inline_gets_it_truncated(client, fake):
    conv = client.post("/v1/conversations", json={}, headers=CHAT).json["id"]
    for n in range(1, 9):
        fake.reset()
        _create(client, NATIVE, input=say(n), truncation="auto", conversation=conv)
    [sent] = _sent(fake, "/responses")
    assert sent["truncation"] == "auto"  # passed as given: the provider may truncate further
    texts = [i["content"][0]["text"] for i in sent["input"] if i.get("role") == "user"]
    assert texts[-1] == say(8) and say(1) not in texts
    assert sent["instructions"] == INSTRUCTIONS
    items = client.get(f"/v1/conversations/{conv}/items?order=asc&limit=100", headers=CHAT).json["data"]
    assert len(items) == 16


# ------------------------------------------------------------------------------------------ where to cut
def user(text: str = "q") -> dict:
    return {"type": "message", "role": "user", "content": text}


def answer() -> dict:
    return {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]}


def call(call_id: str) -> dict:
    return {"type": "function_call", "call_id": call_id, "name": "lookup", "arguments": "{}"}


def output(call_id: str) -> dict:
    return {"type": "function_call_output", "call_id": call_id, "output": "x"}


REASONING = {"type": "reasoning", "summary": []}


@pytest.mark.parametrize(
    ("history", "new", "places"),
    [
        ([user(), answer(), user(), answer()], [user()], [2, 4]),
        # A call and its output in one turn: cut only where a user turn begins.
        ([user(), call("c1"), output("c1"), answer(), user(), answer()], [user()], [4, 6]),
        # A user message between a call and its output (a client may put one there): no cut between them.
        ([user(), call("c1"), user(), output("c1"), answer(), user()], [user()], [5, 6]),
        # A model that uses a call id again in a later turn: each output belongs to the call before it.
        ([user(), call("c1"), output("c1"), user(), call("c1"), output("c1"), user()], [user()], [3, 6, 7]),
        # This turn answers a call of the history: no cut after that call.
        ([user(), answer(), user(), call("c1")], [output("c1")], [2]),
        # A reasoning item belongs to the item after it.
        ([user(), answer(), user(), REASONING, user(), answer()], [user()], [2, 6]),
        ([answer(), answer()], [user()], [2]),
        ([], [user()], []),
    ],
    ids=[
        "turns",
        "call-in-a-turn",
        "user-between",
        "id-used-again",
        "new-answers-a-call",
        "reasoning",
        "no-user",
        "no-history",
    ],
)
def test_where_a_history_may_be_cut(history, new, places):
    assert cuts(history, new) == places


# ------------------------------------------------------------------------------------------ the catalogue
def test_context_window_names_models_and_globs_the_longest_glob_first():
    entry = {"base_url": "http://h/v1", "api": "chat"}
    windows = {"llama-3.1-8b": 8192, "*": 32768, "llama-3.1-*": 131072}
    provider = Catalogue({"x": {**entry, "context_window": windows}}).get("x")
    assert provider.window("llama-3.1-8b") == 8192
    assert provider.window("llama-3.1-70b") == 131072
    assert provider.window("mistral") == 32768
    assert Catalogue({"x": entry}).get("x").window("llama-3.1-8b") is None


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (8192, "must be a table of model names"),
        ({"llama-3.1-8b": "8k"}, "'llama-3.1-8b' must be a positive number of tokens"),
        ({"*": 0}, "must be a positive number"),
        ({"*": True}, "must be a positive number"),
    ],
)
def test_a_bad_context_window_stops_the_start(value, words):
    with pytest.raises(CatalogueError, match=words) as caught:
        Catalogue({"x": {"base_url": "http://h/v1", "api": "chat", "context_window": value}})
    assert caught.value.key == "providers.x.context_window"


def test_start_up_names_the_variable_of_a_bad_context_window():
    variable = "GATEWAY_PROVIDERS__OLLAMA__CONTEXT_WINDOW"
    with pytest.raises(StartupError, match=rf"^{variable}: 'llama3' must be a positive number of tokens, not '8k'"):
        check({variable: '{"llama3": "8k"}'}, store=False)


# ------------------------------------------------------------------------------------------ openai-python
@pytest.fixture(scope="module")
def small_window_gateway(fake, tmp_path_factory):
    store = tmp_path_factory.mktemp("truncation") / "gateway.sqlite3"
    server = Gunicorn(
        {
            "GATEWAY_PROVIDERS__FAKECHAT__BASE_URL": fake.url,
            "GATEWAY_PROVIDERS__FAKECHAT__API": "chat",
            "GATEWAY_PROVIDERS__FAKECHAT__CONTEXT_WINDOW": json.dumps({"small": WINDOW}),
            "GATEWAY_STORE_URL": f"sqlite:///{store}",
            "GATEWAY_KEY_SALT": "test-salt",
        },
        workers=1,
        threads=4,
    )
    yield server
    server.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_sdk_strict_over_turns_that_outgrow_the_window(small_window_gateway, fake, stream):
    with openai.OpenAI(
        base_url=small_window_gateway.url + "/v1",
        api_key=KEY,
        max_retries=0,
        default_headers={"x-portkey-provider": "fakechat"},
        _strict_response_validation=True,
    ) as client:

        def create(**params):
            if not stream:
                return client.responses.create(model="small", instructions=INSTRUCTIONS, truncation="auto", **params)
            with client.responses.stream(
                model="small", instructions=INSTRUCTIONS, truncation="auto", **params
            ) as events:
                return events.get_final_response()

        prev = None
        for n in range(1, 9):
            fake.reset()
            made = create(input=say(n), **_after(prev))
            assert made.truncation == "auto" and say(n) in made.output_text
            prev = made.id
        [chat] = _sent(fake)
        assert _users(chat)[0] != say(1) and chat["messages"][-1]["content"] == say(n) and _fits(chat)
        assert client.responses.retrieve(prev).truncation == "auto"
        listed = list(client.responses.input_items.list(prev))
        assert [i.content[0].text for i in listed] == [say(8)]

    # Told to the operator: the access log line says how many items were left out, and a counter counts.
    lines = [json.loads(x) for x in small_window_gateway.output().splitlines() if '"truncated_items"' in x]
    assert lines and lines[-1]["truncated_items"] > 0 and lines[-1]["provider"] == "fakechat"
    metrics = requests.get(small_window_gateway.url + "/metrics", timeout=10).text
    assert 'gateway_truncated_requests_total{provider="fakechat"}' in metrics

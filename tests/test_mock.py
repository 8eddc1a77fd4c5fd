"""The built-in mock provider: both wire formats, JSON and SSE, the same answer for the same request."""

from __future__ import annotations

import json

import pytest

from gateway import mock

HEADERS = {"Authorization": "Bearer demo", "x-portkey-provider": "mock"}


def _events(data: bytes) -> list[dict]:
    return [json.loads(line[6:]) for line in data.decode().splitlines() if line.startswith("data: {")]


def test_chat_completions_json_is_deterministic():
    body = json.dumps({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]}).encode()
    one, two = mock.answer("POST", "/chat/completions", body), mock.answer("POST", "/chat/completions", body)
    a, b = json.loads(b"".join(one.chunks)), json.loads(b"".join(two.chunks))
    assert a["choices"][0]["message"]["content"] == "Echo 1: hi"
    assert {**a, "created": 0} == {**b, "created": 0}


def test_chat_completions_stream_ends_with_done_and_usage():
    body = {"model": "m", "messages": [{"role": "user", "content": "a b c"}], "stream": True}
    body["stream_options"] = {"include_usage": True}
    answer = mock.answer("POST", "/chat/completions", json.dumps(body).encode())
    chunks = list(answer.chunks)
    assert answer.content_type == "text/event-stream"
    assert chunks[-1] == b"data: [DONE]\n\n"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in _events(b"".join(chunks)) if c["choices"])
    assert text == "Echo 1: a b c"
    assert _events(b"".join(chunks))[-1]["usage"]["completion_tokens"] == 5


def test_tools_are_called_then_their_result_is_read(client):
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    first = client.post("/v1/responses", json={"model": "mock-1", "input": "find x", "tools": tools}, headers=HEADERS)
    call = first.json["output"][0]
    assert call["type"] == "function_call" and json.loads(call["arguments"]) == {"input": "find x"}
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "42"}
    second = client.post(
        "/v1/responses",
        json={"model": "mock-1", "input": [output], "tools": tools, "previous_response_id": first.json["id"]},
        headers=HEADERS,
    )
    assert second.json["output"][0]["content"][0]["text"] == "Tool said: 42"


@pytest.mark.parametrize("provider", ["mock", "mock-responses"])
def test_both_paths_answer_json_and_streams(client, provider):
    headers = {**HEADERS, "x-portkey-provider": provider}
    resp = client.post("/v1/responses", json={"model": "mock-1", "input": "hello there"}, headers=headers)
    assert resp.status_code == 200
    assert resp.json["output"][0]["content"][0]["text"] == "Echo 1: hello there"
    assert resp.headers["x-portkey-provider"] == provider
    streamed = client.post(
        "/v1/responses", json={"model": "mock-1", "input": "hello there", "stream": True}, headers=headers
    )
    events = _events(streamed.data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "Echo 1: hello there"


def test_a_chain_on_the_mock_counts_its_turns_and_reads_back(client):
    prev = None
    for turn, text in enumerate(["one", "two", "three"], start=1):
        body = {"model": "mock-1", "input": text, **({"previous_response_id": prev} if prev else {})}
        resp = client.post("/v1/responses", json=body, headers=HEADERS)
        assert resp.json["output"][0]["content"][0]["text"] == f"Echo {turn}: {text}"
        prev = resp.json["id"]
    assert client.get(f"/v1/responses/{prev}", headers=HEADERS).json["id"] == prev
    items = client.get(f"/v1/responses/{prev}/input_items", headers=HEADERS).json["data"]
    assert items[0]["content"][0]["text"] == "three"


def test_models_and_unknown_paths():
    models = json.loads(b"".join(mock.answer("GET", "/models", None).chunks))
    assert [m["id"] for m in models["data"]] == ["mock-1"]
    missing = mock.answer("GET", "/responses/resp_1", None)
    assert missing.status == 404 and b"keeps no responses" in b"".join(missing.chunks)
    bad = mock.answer("POST", "/chat/completions", b"{")
    assert bad.status == 400

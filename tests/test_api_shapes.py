"""What clients type strictly: listed items, emulated Responses and events, and the answer of every /v1 path."""

from __future__ import annotations

import copy
import json

import pytest

from gateway.emulation import response as build
from gateway.emulation.stream import StreamTranslator
from gateway.items import as_listed
from tests import strict_types as strict

# ------------------------------------------------------------------------------------------ listed items
SHORT_FORMS = [
    ({"role": "user", "content": "hi"}, {"content": [{"type": "input_text", "text": "hi"}], "status": "completed"}),
    (
        {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
        {"content": [{"type": "input_text", "text": "be brief"}]},
    ),
    ({"role": "developer", "content": "rules"}, {"content": [{"type": "input_text", "text": "rules"}]}),
    (
        {"role": "assistant", "content": "earlier answer"},
        {"content": [{"type": "output_text", "text": "earlier answer", "annotations": [], "logprobs": []}]},
    ),
    (
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "x"}],
            "status": "incomplete",
        },
        {"content": [{"type": "output_text", "text": "x", "annotations": [], "logprobs": []}], "status": "incomplete"},
    ),
    (
        {"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}]},
        {"content": [{"type": "input_image", "image_url": "data:image/png;base64,AA==", "detail": "auto"}]},
    ),
    (
        {
            "role": "user",
            "content": [{"type": "input_file", "file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"}],
        },
        {"status": "completed"},
    ),
    ({"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}, {"status": "completed"}),
    ({"type": "function_call_output", "call_id": "c1", "output": "ok"}, {"status": "completed", "output": "ok"}),
    (
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "text", "text": "ok"}]},
        {"output": [{"type": "input_text", "text": "ok"}]},
    ),
    ({"type": "reasoning", "content": [{"type": "reasoning_text", "text": "hmm"}]}, {"summary": []}),
]


@pytest.mark.parametrize(("given", "expected"), SHORT_FORMS)
def test_every_accepted_input_item_is_listed_in_its_sdk_type(given, expected):
    stored = {**given, "id": "item_1"}
    before = copy.deepcopy(stored)
    listed = as_listed(stored)
    assert {k: listed[k] for k in expected} == expected
    strict.items_page(
        {"object": "list", "data": [listed], "first_id": "item_1", "last_id": "item_1", "has_more": False}
    )
    assert stored == before  # the stored item is left as it was


# ------------------------------------------------------------------------------------------ streams
def _chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": choices, "usage": usage}


def _call(index: int, *, call_id: str | None = None, name: str | None = None, arguments: str = "") -> dict:
    call: dict = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"]["name"] = name
    return _chunk({"tool_calls": [call]})


def _translate(chunks: list[dict], body: dict | None = None) -> list[dict]:
    body = {
        "model": "m",
        "tools": [{"type": "function", "name": "a"}, {"type": "function", "name": "b"}],
        **(body or {}),
    }
    translator = StreamTranslator(build.skeleton(body, "resp_1", 1700000000, None))
    frames = list(translator.start())
    for chunk in chunks:
        frames += translator.feed(chunk)
    frames += translator.complete()[1]
    return [json.loads(frame.raw.decode().split("data: ", 1)[1]) for frame in frames]


def test_interleaved_parallel_call_pieces_reach_every_done_event_whole():
    events = _translate(
        [
            _chunk({"role": "assistant", "content": ""}),
            _call(0, call_id="call_a", name="a"),
            _call(0, arguments='{"q": '),
            _call(1, call_id="call_b", name="b"),
            _call(1, arguments='{"q": "two"}'),
            _call(0, arguments='"one"}'),
            _chunk({}, "tool_calls"),
            _chunk(None, usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
        ]
    )
    final = strict.stream(events)
    assert [(o["name"], o["arguments"]) for o in final["output"]] == [("a", '{"q": "one"}'), ("b", '{"q": "two"}')]
    done = [e["item"]["arguments"] for e in events if e["type"] == "response.output_item.done"]
    assert done == ['{"q": "one"}', '{"q": "two"}']
    deltas = [(e["output_index"], e["delta"]) for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == [(0, '{"q": '), (1, '{"q": "two"}'), (0, '"one"}')]


def test_text_before_and_after_calls_keeps_a_valid_order():
    events = _translate(
        [
            _chunk({"content": "Checking."}),
            _call(0, call_id="call_a", name="a", arguments="{}"),
            _chunk({"content": " More."}),
            _chunk({}, "tool_calls"),
        ]
    )
    final = strict.stream(events)
    assert [o["type"] for o in final["output"]] == ["message", "function_call", "message"]


def test_a_broken_stream_closes_its_open_calls_as_incomplete():
    body = {"model": "m", "tools": [{"type": "function", "name": "a"}]}
    translator = StreamTranslator(build.skeleton(body, "resp_1", 1700000000, None))
    frames = translator.start() + translator.feed(_call(0, call_id="call_a", name="a", arguments='{"q"'))
    final, closing = translator.fail("server_error", "cut")
    events = [json.loads(f.raw.decode().split("data: ", 1)[1]) for f in frames + closing]
    assert [e["type"] for e in events][-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.failed",
    ]
    assert events[-2]["item"] == final["output"][0] and final["output"][0]["status"] == "incomplete"
    strict.response(final)


# ------------------------------------------------------------------------------------------ Response fields
def test_emulated_response_has_every_field_the_api_always_sends():
    fmt = {"type": "json_schema", "name": "answer", "schema": {"type": "object"}}
    body = {"model": "m", "input": "x", "text": {"format": fmt}, "presence_penalty": 0.5}
    chat = {"model": "m-1", "choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}], "usage": {}}
    final = build.from_chat(body, chat, "resp_1", None)
    strict.response(final)
    assert final["presence_penalty"] == 0.5 and final["frequency_penalty"] == 0.0
    assert final["text"] == {
        "format": {
            "type": "json_schema",
            "name": "answer",
            "description": None,
            "schema": {"type": "object"},
            "strict": False,
        },
        "verbosity": "medium",
    }


# ------------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("post", "/v1/responses/input_tokens", 400, "invalid_json"),
        ("post", "/v1/responses/compact", 400, "invalid_json"),
        # An id the store never saw, for a caller with its own key: the provider's answer (the fake: 404).
        ("post", "/v1/responses/resp_123/cancel", 404, None),
        ("get", "/v1/responses//input_items", 404, "unknown_url"),
        ("post", "/v1//responses", 404, "unknown_url"),
        ("get", "/v1/responses/", 404, "unknown_url"),
        ("get", "/v1/unknown", 404, "unknown_url"),
        ("put", "/v1/responses", 405, "method_not_allowed"),
        ("get", "/v1/models/../chat/completions", 400, "invalid_value"),
    ],
)
def test_every_v1_path_answers_json_in_the_error_shape(client, headers, method, path, status, code):
    resp = getattr(client, method)(path, headers=headers)
    assert resp.status_code == status and resp.mimetype == "application/json"
    assert set(resp.json["error"]) == {"message", "type", "param", "code"} and resp.json["error"]["code"] == code
    if status == 501:
        assert resp.headers["x-should-retry"] == "false" and "not available" in resp.json["error"]["message"]


def test_every_endpoint_needs_a_key_before_anything_else(client):
    for path in (
        "/v1/responses/compact",
        "/v1/responses/input_tokens",
        "/v1/responses/resp_1/cancel",
        "/v1/conversations",
    ):
        assert client.post(path).status_code == 401


def test_models_are_asked_of_the_named_provider(client, headers, fake):
    assert client.get("/v1/models", headers=headers).json == {"object": "list", "data": []}
    client.get("/v1/models/org/model-1", headers=headers)
    assert fake.requests[-1]["path"] == "/v1/models/org/model-1"
    chat = client.get("/v1/models", headers={**headers, "x-portkey-provider": "fakechat"})
    assert chat.status_code == 200 and chat.headers["x-portkey-provider"] == "fakechat"

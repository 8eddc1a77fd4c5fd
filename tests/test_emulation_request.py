"""Request translation, Responses -> Chat Completions, as a table of cases."""

from __future__ import annotations

import pytest

from gateway.emulation.request import to_chat
from gateway.errors import InvalidRequest
from gateway.store import input_items_of


def chat(body, history=()):
    return to_chat(
        {"model": "m", **body}, list(history), input_items_of(body.get("input")), max_tokens_param="max_tokens"
    )


def test_roles_and_content_parts():
    out = chat(
        {
            "input": [
                {"role": "developer", "content": "rules"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "https://x.test/a.png"},
                    ],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "ok", "annotations": []}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "input_file", "file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"}
                    ],
                },
            ]
        }
    )
    assert out["messages"] == [
        {"role": "system", "content": "rules"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "auto"}},
            ],
        },
        {"role": "assistant", "content": "ok"},
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"}}
            ],
        },
    ]


def test_parameters_are_mapped_and_extras_forwarded():
    out = chat(
        {
            "input": "hi",
            "max_output_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "stream": True,
            "reasoning": {"effort": "low"},
            "safety_identifier": "u1",
            "metadata": {"a": "b"},
            "top_k": 5,
            "store": True,
            "include": ["reasoning.encrypted_content"],
        }
    )
    assert out["max_tokens"] == 50 and out["temperature"] == 0.2 and out["top_p"] == 0.9
    assert out["top_k"] == 5  # an extra the caller meant for the provider
    assert out["stream_options"] == {"include_usage": True}
    # Responses fields a chat API would not know reach it only where the provider's entry lists them.
    assert not {"metadata", "store", "include", "max_output_tokens", "reasoning_effort", "safety_identifier"} & set(out)


def test_the_responses_fields_a_provider_lists_reach_it_by_their_chat_names():
    body = {
        "model": "m",
        "input": "hi",
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"verbosity": "low"},
        "safety_identifier": "u1",
        "prompt_cache_key": "k1",
        "prompt_cache_retention": "24h",
        "client_metadata": {"turn_id": "t"},
        "service_tier": "flex",
    }
    listed = ("reasoning.effort", "text.verbosity", "safety_identifier", "prompt_cache_key", "client_metadata")
    out = to_chat(body, [], input_items_of("hi"), max_tokens_param="max_tokens", chat_fields=listed)
    assert out["reasoning_effort"] == "low" and out["verbosity"] == "low" and out["safety_identifier"] == "u1"
    assert out["prompt_cache_key"] == "k1" and out["client_metadata"] == {"turn_id": "t"}
    assert not {"service_tier", "prompt_cache_retention", "reasoning", "text"} & set(out)
    bare = to_chat(body, [], input_items_of("hi"), max_tokens_param="max_tokens")
    assert set(bare) == {"model", "messages"}


def test_reasoning_goes_back_only_to_a_provider_that_takes_it():
    items = [
        {"type": "message", "role": "user", "content": "weather?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Hmm."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sun"},
        {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAA"},  # a native provider's
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
    ]
    taken = to_chat({"model": "m"}, items, [], max_tokens_param="m", reasoning_field="reasoning_content")
    assert taken["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
        "reasoning_content": "Hmm.",
    }
    assert "reasoning_content" not in taken["messages"][3]
    left_out = to_chat({"model": "m"}, items, [], max_tokens_param="m")
    assert [m["role"] for m in left_out["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert not any("reasoning_content" in m for m in left_out["messages"])


def test_output_items_of_earlier_turns_become_assistant_turns():
    history = [
        {"type": "message", "role": "user", "content": "weather?"},
        {
            "type": "message",
            "id": "msg_1",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
        },
        {"type": "function_call", "id": "fc_1", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call", "id": "fc_2", "call_id": "c2", "name": "w", "arguments": "{}"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ]
    out = chat(
        {
            "input": [
                {"type": "function_call_output", "call_id": "c1", "output": "sun"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
            ]
        },
        history,
    )
    assert out["messages"][1]["content"] == "Checking."
    assert [c["id"] for c in out["messages"][1]["tool_calls"]] == ["c1", "c2"]
    assert out["messages"][2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "sun"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0]"),
        ({"input": "x", "tool_choice": {"type": "hologram"}}, "tool_choice"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"role": "assistant", "content": [{"type": "input_text", "text": "no"}]}]}, "input[0].content[0]"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format"),
        ({"input": [{"type": "function_call", "call_id": "c9", "name": "f", "arguments": "{}"}]}, "input"),
    ],
)
def test_what_chat_cannot_express_is_a_400(body, param):
    # Hosted tools are 400 under hosted_tools = "refuse" (the default leaves them out: tests/test_tool_types.py).
    with pytest.raises(InvalidRequest) as info:
        to_chat(
            {"model": "m", **body},
            [],
            input_items_of(body.get("input")),
            max_tokens_param="max_tokens",
            hosted_tools="refuse",
        )
    assert info.value.param == param

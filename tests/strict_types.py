"""Strict checks of what the gateway sends against the openai SDK's own types, as a strict client does.

``validate_type`` is what ``OpenAI(_strict_response_validation=True)`` runs on every answer: a missing
required field or a wrong type raises. The stream check adds what no type can say: every ``done`` event
carries the item of the final response.
"""

from __future__ import annotations

import json
from typing import Any

from openai._models import validate_type
from openai.types.responses import Response, ResponseItemList, ResponseStreamEvent

# The fields the Open Responses specification requires of every Response (ResponseResource.json, "required").
SPEC_REQUIRED = [
    "id",
    "object",
    "created_at",
    "completed_at",
    "status",
    "incomplete_details",
    "model",
    "previous_response_id",
    "instructions",
    "output",
    "error",
    "tools",
    "tool_choice",
    "truncation",
    "parallel_tool_calls",
    "text",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "top_logprobs",
    "temperature",
    "reasoning",
    "user",
    "usage",
    "max_output_tokens",
    "max_tool_calls",
    "store",
    "background",
    "service_tier",
    "metadata",
    "safety_identifier",
    "prompt_cache_key",
]


def response(data: dict) -> Response:
    missing = [f for f in SPEC_REQUIRED if f not in data]
    assert not missing, f"Response {data.get('id')} lacks {missing}"
    return validate_type(type_=Response, value=data)


def items_page(data: dict) -> ResponseItemList:
    return validate_type(type_=ResponseItemList, value=data)


def stream(events: list[dict]) -> dict:
    """Validate every event, their order and their agreement with the final response; returns it."""
    for event in events:
        validate_type(type_=ResponseStreamEvent, value=event)
        if isinstance(event.get("response"), dict):
            response(event["response"])
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    final = events[-1]
    assert final["type"] in ("response.completed", "response.incomplete"), final["type"]
    output = final["response"]["output"]
    added: set[int] = set()
    done: set[int] = set()
    arguments: dict[int, str] = {}
    for event in events:
        kind, index = event["type"], event.get("output_index")
        if kind == "response.output_item.added":
            assert index not in added
            added.add(index)
        elif index is not None:
            assert index in added and index not in done, f"{kind} for item {index} outside its added..done"
        if kind == "response.function_call_arguments.delta":
            arguments[index] = arguments.get(index, "") + event["delta"]
        elif kind == "response.function_call_arguments.done":
            assert event["arguments"] == output[index]["arguments"] == arguments.get(index, "")
        elif kind == "response.output_item.done":
            assert event["item"] == output[index], f"item {index}: done event and final response differ"
            done.add(index)
    assert added == done == set(range(len(output)))
    return final["response"]


def sse_events(text: str) -> list[dict[str, Any]]:
    """The JSON payloads of an SSE body, in order."""
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]

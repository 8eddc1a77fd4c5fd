"""The events of a background run as plain values: its first ones, the Response they add up to, and the
closing events the gateway writes itself (a cancel, a run whose consumer died).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

from ..emulation import response as build
from ..errors import GatewayError
from ..reply import error_payload

CANCELLED_MESSAGE = "The response was cancelled (POST /v1/responses/{id}/cancel)."


def queued(body: dict, previous_response_id: str | None, conversation: str | None) -> dict:
    """The Response of a run just queued: the request echoed, no output yet."""
    echoed = {**body, "conversation": {"id": conversation}} if conversation else body
    response = build.skeleton(echoed, build.new_id("resp"), int(time.time()), previous_response_id)
    response["status"] = "queued"
    response["background"] = True
    return response


def opening(response: dict) -> list[dict]:
    """The events written with the queued record: ``response.created`` and ``response.queued``."""
    return [
        {"type": "response.created", "response": response, "sequence_number": 0},
        {"type": "response.queued", "response": response, "sequence_number": 1},
    ]


def accumulate(base: dict, stored: list[dict]) -> dict:
    """The Response that ``stored`` events add up to, from ``base`` (the record): the newest snapshot, with
    every output item as far as its events go. Items cut short stay ``in_progress``.
    """
    response = copy.deepcopy(base)
    output: list[dict] = list(response.get("output") or [])
    for event in stored:
        kind = event.get("type", "")
        snapshot = event.get("response")
        if isinstance(snapshot, dict):
            kept = output
            response = copy.deepcopy(snapshot)
            output = list(response.get("output") or []) or kept
            continue
        index = event.get("output_index")
        if not isinstance(index, int) or index < 0:
            continue
        if kind in ("response.output_item.added", "response.output_item.done"):
            while len(output) <= index:
                output.append({})
            output[index] = copy.deepcopy(event.get("item") or {})
            continue
        if index >= len(output):
            continue
        item = output[index]
        if kind.endswith("function_call_arguments.delta"):
            item["arguments"] = (item.get("arguments") or "") + str(event.get("delta") or "")
        elif kind.endswith("function_call_arguments.done"):
            item["arguments"] = event.get("arguments", item.get("arguments"))
        elif kind in ("response.content_part.added", "response.content_part.done"):
            _set_part(item, event.get("content_index", 0), copy.deepcopy(event.get("part") or {}))
        elif kind in ("response.output_text.delta", "response.reasoning_text.delta", "response.refusal.delta"):
            part = _part(item, event.get("content_index", 0), kind)
            key = "refusal" if "refusal" in kind else "text"
            part[key] = (part.get(key) or "") + str(event.get("delta") or "")
        elif kind in ("response.output_text.done", "response.reasoning_text.done"):
            _part(item, event.get("content_index", 0), kind)["text"] = event.get("text", "")
    response["output"] = [item for item in output if item]
    return response


def _set_part(item: dict, index: int, part: dict) -> None:
    content = item.setdefault("content", [])
    while len(content) <= index:
        content.append({})
    content[index] = part


def _part(item: dict, index: int, kind: str) -> dict:
    content = item.setdefault("content", [])
    while len(content) <= index:
        default = "reasoning_text" if "reasoning" in kind else "output_text"
        content.append(
            {"type": default, "text": ""}
            if default == "reasoning_text"
            else {"type": default, "text": "", "annotations": []}
        )
    return content[index]


def cancelled(base: dict, stored: list[dict], seq: int) -> tuple[dict, dict]:
    """A cancel's end: the output so far, ``status: cancelled``; followers' streams end with an error event
    saying so (the API has no event for a cancel; its clients end on ``error``).
    """
    final = accumulate(base, stored)
    final.update(status="cancelled", completed_at=None, usage=None)
    message = CANCELLED_MESSAGE.replace("{id}", str(final.get("id")))
    return final, error_payload(seq, GatewayError(message, code="response_cancelled"))


def failed(message: str) -> Callable[[dict, list[dict], int], tuple[dict, dict]]:
    """An end ``failed`` with ``message``: the output so far, and ``response.failed`` to close the stream."""

    def settle(base: dict, stored: list[dict], seq: int) -> tuple[dict, dict]:
        final = accumulate(base, stored)
        final.update(status="failed", completed_at=None, error={"code": "server_error", "message": message})
        return final, {"type": "response.failed", "response": final, "sequence_number": seq}

    return settle


def frame(kind: str, body: str) -> bytes:
    """A stored event as SSE, as it was first sent."""
    return b"event: " + kind.encode() + b"\ndata: " + body.encode() + b"\n\n"

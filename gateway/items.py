"""Items in the shapes the API returns them: what a caller sent as input, as ``input_items`` must list it.

Callers may send the short forms the API accepts (``"content": "hi"``, parts of type ``text``, items without
``status``); the SDKs type the items they read back strictly, so a listed item has typed content parts and
every field its type requires.
"""

from __future__ import annotations

from typing import Any

_INPUT_ROLES = frozenset({"user", "system", "developer"})
# Items whose status the SDK types require; the API reports what it was given as done.
_WITH_STATUS = frozenset({"message", "function_call", "function_call_output"})


def as_listed(item: dict) -> dict:
    """``item`` (an input item as received, with its id) as ``input_items`` lists it; a new dict.

    Item types the gateway passes through without knowing them are returned as they are.
    """
    kind = item.get("type") or "message"
    out = {**item, "type": kind}
    if kind in _WITH_STATUS and not out.get("status"):
        out["status"] = "completed"
    if kind == "message":
        out["content"] = _content(out.get("role"), out.get("content"))
    elif kind == "function_call":
        out.setdefault("arguments", "")
    elif kind == "function_call_output":
        if isinstance(out.get("output"), list):
            out["output"] = [_input_part(p) for p in out["output"]]
    elif kind == "reasoning":
        out.setdefault("summary", [])
    return out


def _content(role: Any, content: Any) -> Any:
    assistant = role not in _INPUT_ROLES
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return content  # the create schema refuses these; nothing sensible to make of one stored earlier
    return [_output_part(p) if assistant else _input_part(p) for p in content]


def _input_part(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        # Chat-style "text" and an echoed "output_text" both mean text the caller gave the model.
        return {**_without(part, "annotations", "logprobs"), "type": "input_text", "text": part.get("text", "")}
    if kind == "input_image":
        return {"detail": "auto", **part} if not part.get("detail") else part
    return part


def _output_part(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    if part.get("type") in ("text", "input_text", "output_text"):
        return {"annotations": [], "logprobs": [], **part, "type": "output_text", "text": part.get("text", "")}
    return part


def _without(part: dict, *keys: str) -> dict:
    return {k: v for k, v in part.items() if k not in keys}

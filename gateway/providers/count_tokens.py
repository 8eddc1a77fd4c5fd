"""Providers' own token-counting endpoints: the request shapes (Anthropic's messages/count_tokens, Gemini's
countTokens) a Chat Completions body is sent as, their auth headers, and the field holding the count.
The catalogue names a provider's shape (``count_tokens``) and its URL; tokens.py makes the call.
"""

from __future__ import annotations

from typing import Any

import orjson


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def _arguments(raw: str) -> Any:
    try:
        return orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": raw}


def anthropic_body(chat: dict) -> dict:
    """A Chat Completions body as Anthropic's /v1/messages/count_tokens takes it."""
    system = [_text(m["content"]) for m in chat["messages"] if m["role"] == "system"]
    messages: list[dict] = []
    for m in chat["messages"]:
        if m["role"] == "system":
            continue
        if m["role"] == "tool":
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": _text(m["content"])}
            messages.append({"role": "user", "content": [block]})
            continue
        blocks: list[dict] = []
        if isinstance(m.get("content"), list):
            for part in m["content"]:
                if part.get("type") == "image_url":
                    blocks.append({"type": "image", "source": {"type": "url", "url": part["image_url"]["url"]}})
                elif part.get("type") == "text":
                    blocks.append({"type": "text", "text": part["text"]})
        elif m.get("content"):
            blocks.append({"type": "text", "text": m["content"]})
        for call in m.get("tool_calls") or []:
            function = call["function"]
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call["id"],
                    "name": function["name"],
                    "input": _arguments(function["arguments"]),
                }
            )
        messages.append({"role": m["role"], "content": blocks or [{"type": "text", "text": ""}]})
    body: dict[str, Any] = {"model": chat["model"], "messages": messages}
    if system:
        body["system"] = "\n\n".join(system)
    if chat.get("tools"):
        body["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"]["parameters"],
            }
            for t in chat["tools"]
        ]
    return body


def gemini_body(chat: dict) -> dict:
    """A Chat Completions body as Gemini's models/{model}:countTokens takes it (a generateContentRequest)."""
    system = [_text(m["content"]) for m in chat["messages"] if m["role"] == "system"]
    names: dict[str, str] = {}
    contents: list[dict] = []
    for m in chat["messages"]:
        if m["role"] == "system":
            continue
        if m["role"] == "tool":
            response = {"name": names.get(m["tool_call_id"], "tool"), "response": {"content": _text(m["content"])}}
            contents.append({"role": "user", "parts": [{"functionResponse": response}]})
            continue
        parts: list[dict] = []
        text = _text(m.get("content"))
        if text:
            parts.append({"text": text})
        for call in m.get("tool_calls") or []:
            names[call["id"]] = call["function"]["name"]
            parts.append(
                {"functionCall": {"name": call["function"]["name"], "args": _arguments(call["function"]["arguments"])}}
            )
        contents.append({"role": "model" if m["role"] == "assistant" else "user", "parts": parts or [{"text": ""}]})
    request: dict[str, Any] = {"model": f"models/{chat['model']}", "contents": contents}
    if system:
        request["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if chat.get("tools"):
        request["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t["function"]["name"],
                        "description": t["function"].get("description", ""),
                        "parameters": t["function"]["parameters"],
                    }
                    for t in chat["tools"]
                ]
            }
        ]
    return {"generateContentRequest": request}


# Each shape: the body, the auth headers for a key, and where the answer holds the count.
COUNT_SHAPES = {
    "anthropic": (anthropic_body, lambda key: {"x-api-key": key, "anthropic-version": "2023-06-01"}, "input_tokens"),
    "gemini": (gemini_body, lambda key: {"x-goog-api-key": key}, "totalTokens"),
}

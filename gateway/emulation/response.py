"""Chat Completions answer -> Response object, with ids the gateway mints and the request's parameters echoed."""

from __future__ import annotations

import time
import uuid
from typing import Any

from . import tools as client
from .request import custom_input, tool_names


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


_FINISH = {
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}


def skeleton(body: dict, response_id: str, created_at: int, previous_response_id: str | None) -> dict:
    """The Response object as the real API echoes a request, before any output (``status: in_progress``)."""
    reasoning = body.get("reasoning") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": "in_progress",
        "completed_at": None,
        "background": bool(body.get("background")),
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body["model"],
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "presence_penalty": _number(body.get("presence_penalty"), 0.0),
        "frequency_penalty": _number(body.get("frequency_penalty"), 0.0),
        "previous_response_id": previous_response_id,
        "prompt_cache_key": body.get("prompt_cache_key"),
        "prompt_cache_retention": body.get("prompt_cache_retention"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": body.get("service_tier") or "auto",
        "store": body.get("store") is not False,
        "temperature": body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0,
        "text": _echo_text(body.get("text") or {}),
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [_echo_tool(t) for t in body.get("tools") or []],
        "top_logprobs": body.get("top_logprobs") or 0,
        "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
        "truncation": body.get("truncation") or "disabled",
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
        # The relay gives the conversation as {"id": ...}; the API names it only when there is one.
        **({"conversation": body["conversation"]} if body.get("conversation") else {}),
        # The prompt template the gateway expanded (gateway/prompts.py), as the request named it.
        **({"prompt": body["prompt"]} if body.get("prompt") else {}),
    }


def _number(value: Any, default: float) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _echo_text(text: dict) -> dict:
    """``text`` as the API echoes it: the format with every field of its type, and the verbosity."""
    fmt = text.get("format") or {"type": "text"}
    if fmt.get("type") == "json_schema":
        # The Open Responses spec requires all five; the API fills in what the request left out.
        fmt = {
            "type": "json_schema",
            "name": fmt.get("name"),
            "description": fmt.get("description"),
            "schema": fmt.get("schema"),
            "strict": bool(fmt.get("strict")),
            **{k: v for k, v in fmt.items() if k not in ("type", "name", "description", "schema", "strict")},
        }
    return {"format": fmt, "verbosity": text.get("verbosity") or "medium"}


def _echo_tool(tool: dict) -> dict:
    if tool.get("type") != "function":
        if tool.get("type") == "mcp" and ("headers" in tool or "authorization" in tool):
            # An MCP server's credentials go to it and nowhere else: never echoed, so never stored.
            return {k: v for k, v in tool.items() if k not in ("headers", "authorization")}
        return tool  # as the client sent it (namespaces, and tools the provider was not shown)
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict", True) if tool.get("strict") is not None else True,
    }


def usage(chat_usage: Any) -> dict:
    """Chat usage -> Responses usage, with both detail objects always present."""
    u = chat_usage if isinstance(chat_usage, dict) else {}
    prompt = u.get("prompt_tokens") or 0
    completion = u.get("completion_tokens") or 0
    prompt_details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": prompt_details.get("cached_tokens") or 0,
            "cache_write_tokens": prompt_details.get("cache_write_tokens") or 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": u.get("total_tokens") or prompt + completion,
    }


def reasoning_text(message: dict) -> str | None:
    """Reasoning some providers return beside the answer (DeepSeek: reasoning_content; vLLM, OpenRouter: reasoning)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def reasoning_item(item_id: str, text: str) -> dict:
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": "completed",
    }


def message_item(item_id: str, text: str | None, refusal: str | None, status: str) -> dict:
    content: list[dict] = []
    if text is not None:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed", names: dict | None = None
) -> dict:
    """A function_call item; ``names`` maps a namespaced tool's Chat Completions name to (namespace, name)."""
    item = {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }
    if names:
        name_as_called(item, names)
    return item


def name_as_called(item: dict, names: dict) -> None:
    """The call as the client's item: its name (and namespace) for a call the provider made by its Chat
    Completions name, a custom tool's call as a ``custom_tool_call`` with its ``input``, and a tool the client
    runs (shell, apply_patch…) as its own call item.
    """
    found = names.get(item["name"])
    if found is None:
        return
    namespace, name, kind = found
    if kind in client.CLIENT_TOOLS:
        client.call_item(item, client.CLIENT_TOOLS[kind], item.get("arguments") or "")
        return  # (left a function_call when its arguments are not whole)
    item["name"] = name
    if namespace is not None:
        item["namespace"] = namespace
    if kind == "custom":
        item["type"] = "custom_tool_call"
        item["input"] = custom_input(item.pop("arguments"))
        item.pop("status", None)  # custom tool calls have none


def finish(response: dict, finish_reason: str | None, chat_usage: Any) -> dict:
    """Set the terminal status from the finish reason, and usage: the Response is then complete."""
    status, reason = _FINISH.get(finish_reason or "stop", ("completed", None))
    response["status"] = status
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["completed_at"] = int(time.time()) if status == "completed" else None
    response["usage"] = usage(chat_usage)
    return response


def from_chat(
    body: dict, chat: dict, response_id: str, previous_response_id: str | None, names: dict | None = None
) -> dict:
    """A whole Chat Completions answer -> the final Response object; ``names`` as ``tool_names`` gives them."""
    response = skeleton(body, response_id, int(time.time()), previous_response_id)
    response["model"] = chat.get("model") or body["model"]
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    finish_reason = choice.get("finish_reason")
    item_status = "incomplete" if finish_reason in _FINISH else "completed"
    output = response["output"]
    reasoning = reasoning_text(message)
    if reasoning:
        output.append(reasoning_item(new_id("rs"), reasoning))
    text = message.get("content")
    refusal = message.get("refusal")
    if isinstance(text, list):  # a few providers answer with content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text or refusal:
        output.append(message_item(new_id("msg"), text if text else None, refusal, item_status))
    names = tool_names(body.get("tools")) if names is None else names
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                function.get("name", ""),
                function.get("arguments") or "",
                names=names,
            )
        )
    return finish(response, finish_reason, chat.get("usage"))

"""Responses request -> Chat Completions request. Anything that cannot be carried over is a 400, never dropped."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest

# Fields of the Responses request this module translates (or deliberately keeps in the gateway).
# Everything else is an extra the caller meant for the provider (top_k, repetition_penalty…): forwarded.
_HANDLED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "previous_response_id",
        "store",
        "stream",
        "stream_options",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "max_tool_calls",
        "temperature",
        "top_p",
        "top_logprobs",
        "text",
        "reasoning",
        "metadata",
        "include",
        "user",
        "safety_identifier",
        "truncation",
        "background",
        "conversation",
        "context_management",
        "prompt",
        "service_tier",
        "prompt_cache_key",
    }
)
_UNSUPPORTED = {
    "prompt": "Stored prompt templates are not available for providers the gateway emulates.",
}


def _unsupported(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def to_chat(body: dict, history: list[dict], new_items: list[dict], *, max_tokens_param: str) -> dict:
    """The Chat Completions body for a Responses ``body`` whose earlier turns are ``history``.

    ``new_items`` is this turn's input as items. ``instructions`` apply to this turn only, as in the API.
    Raises InvalidRequest naming the parameter for a feature Chat Completions cannot express.
    """
    for field, message in _UNSUPPORTED.items():
        if body.get(field):
            raise _unsupported(field, message)

    messages: list[dict] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    _append_items(messages, history, "input")
    _append_items(messages, new_items, "input", offset_param=True)
    _check_tool_outputs(messages)

    chat: dict[str, Any] = {k: v for k, v in body.items() if k not in _HANDLED}
    chat["model"] = body["model"]
    chat["messages"] = messages
    if body.get("tools"):
        chat["tools"] = [_tool(i, tool) for i, tool in enumerate(body["tools"])]
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("max_output_tokens") is not None:
        chat[max_tokens_param] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "service_tier", "prompt_cache_key"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("top_logprobs"):
        chat["logprobs"] = True
        chat["top_logprobs"] = body["top_logprobs"]
    user = body.get("safety_identifier") or body.get("user")
    if user:
        chat["user"] = user
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        chat["reasoning_effort"] = effort
    response_format = _response_format((body.get("text") or {}).get("format"))
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("stream"):
        chat["stream"] = True
        # Usage arrives in the last chunk only when asked for; response.completed must carry it.
        chat["stream_options"] = {"include_usage": True}
    return chat


def _append_items(messages: list[dict], items: list[dict], param: str, offset_param: bool = False) -> None:
    for index, item in enumerate(items):
        where = f"{param}[{index}]" if offset_param else param
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
            }
            if not isinstance(call["id"], str) or not isinstance(call["function"]["name"], str):
                raise InvalidRequest("A function_call item needs call_id and name.", param=where)
            last = messages[-1] if messages else None
            # Consecutive calls (and calls right after the assistant's text) form one assistant turn.
            if last is not None and last["role"] == "assistant" and not _followed_by_tool(messages):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise InvalidRequest("A function_call_output item needs a call_id.", param=f"{where}.call_id")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _tool_output(item, where)})
        elif kind == "reasoning":
            continue  # provider-specific and not replayable over Chat Completions
        elif kind == "item_reference":
            # The relay replaces the references it can resolve; one left here names an item the gateway
            # never held (a native provider's, say), which a Chat Completions provider cannot look up.
            raise InvalidRequest(f"Item with id '{item.get('id')}' not found.", param=where, code="item_not_found")
        else:
            raise _unsupported(where, f"Input items of type '{kind}' are not available for this provider.")


def _followed_by_tool(messages: list[dict]) -> bool:
    return bool(messages) and messages[-1]["role"] == "tool"


def _message(item: dict, where: str) -> dict:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(f"Invalid role {role!r}.", param=f"{where}.role")
    # Chat Completions providers outside OpenAI rarely know "developer": it means the same as system.
    chat_role = "system" if role == "developer" else role
    content = item.get("content")
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        raise InvalidRequest("Message content must be a string or an array of parts.", param=f"{where}.content")
    if role == "assistant":
        texts = []
        refusal = None
        for i, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "output_text":
                texts.append(part.get("text", ""))
            elif kind == "refusal":
                refusal = part.get("refusal", "")
            else:
                raise InvalidRequest(
                    "Supported values are: 'output_text' and 'refusal'.", param=f"{where}.content[{i}]"
                )
        message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        if refusal is not None:
            message["refusal"] = refusal
        return message
    parts = [_part(part, f"{where}.content[{i}]") for i, part in enumerate(content)]
    if chat_role == "system" or all(p["type"] == "text" for p in parts):
        # Plain strings for text-only content: every provider takes them, not all take part arrays.
        if chat_role == "system" and any(p["type"] != "text" for p in parts):
            raise InvalidRequest("System and developer messages can only hold text.", param=f"{where}.content")
        return {"role": chat_role, "content": "".join(p["text"] for p in parts)}
    return {"role": chat_role, "content": parts}


def _part(part: Any, where: str) -> dict:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "text", "output_text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _unsupported(where, "Images must be given by image_url (an http(s) or data: URL) for this provider.")
        return {"type": "image_url", "image_url": {"url": url, "detail": part.get("detail") or "auto"}}
    if kind == "input_file":
        if not part.get("file_data"):
            raise _unsupported(where, "Files must be given inline as file_data for this provider.")
        file = {"file_data": part["file_data"]}
        if part.get("filename"):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise InvalidRequest(f"Unknown content part type {kind!r}.", param=f"{where}.type")


def _tool_output(item: dict, where: str) -> str | list:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        parts = [_part(p, f"{where}.output[{i}]") for i, p in enumerate(output)]
        if all(p["type"] == "text" for p in parts):
            return "".join(p["text"] for p in parts)
        return parts
    raise InvalidRequest("function_call_output.output must be a string or an array of parts.", param=f"{where}.output")


def _check_tool_outputs(messages: list[dict]) -> None:
    """Every call in the conversation needs its output before the model is asked again, as the real API insists."""
    answered = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    for message in messages:
        for call in message.get("tool_calls") or []:
            if call["id"] not in answered:
                raise InvalidRequest(f"No tool output found for function call {call['id']}.", param="input")


def _tool(index: int, tool: dict) -> dict:
    kind = tool.get("type")
    if kind != "function":
        raise _unsupported(
            f"tools[{index}]", f"Tool type '{kind}' is not available for this provider; only function tools are."
        )
    if not isinstance(tool.get("name"), str):
        raise InvalidRequest("A function tool needs a name.", param=f"tools[{index}].name")
    function: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise _unsupported("tool_choice", "Only 'none', 'auto', 'required' or a function are available for this provider.")


def _response_format(fmt: Any) -> dict | None:
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if not isinstance(fmt, dict):
        raise InvalidRequest("text.format must be an object.", param="text.format")
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest("A json_schema format needs a name and a schema.", param="text.format")
        schema = {"name": fmt["name"], "schema": fmt["schema"]}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest(f"Unknown text.format type {fmt.get('type')!r}.", param="text.format.type")

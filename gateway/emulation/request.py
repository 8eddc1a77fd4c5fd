"""Responses request -> Chat Completions request. Anything that cannot be carried over is a 400, never dropped."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import InvalidRequest
from . import tools as client

# Tool types other than function, custom, namespace (functions grouped under a name) and those the client
# runs (local_shell, shell, apply_patch, tool_search: tools.py), all translated here, are run by the platform
# (web_search, file_search, code_interpreter, image_generation, computer, hosted shell, mcp…) or not known
# yet: the provider's ``hosted_tools`` policy says whether they are left out or refused.
# Chat Completions function names are at most 64 characters.
_NAME_MAX = 64

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
        "prompt",  # expanded by the gateway before it gets here (gateway/prompts.py): only echoed
        "service_tier",
        "prompt_cache_key",
        # The rest of openai-python's ResponseCreateParams, and Codex's per-request metadata about itself:
        # a chat provider gets them only where its catalogue entry lists them (chat_fields).
        "access_programs",
        "background_options",
        "image",
        "moderation",
        "prompt_cache_options",
        "prompt_cache_retention",
        "client_metadata",
    }
)
# Responses fields (a dotted name for one inside an object) -> the Chat Completions parameter that means the
# same; a listed field not named here goes by its own name.
_CHAT_NAMES = {
    "reasoning.effort": "reasoning_effort",
    "text.verbosity": "verbosity",
}


def _unsupported(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_parameter")


def to_chat(
    body: dict,
    history: list[dict],
    new_items: list[dict],
    *,
    max_tokens_param: str,
    hosted_tools: str = "omit",
    omitted: list[str] | None = None,
    chat_fields: tuple[str, ...] = (),
    reasoning_field: str | None = None,
    found: list[dict] | None = None,
) -> dict:
    """The Chat Completions body for a Responses ``body`` whose earlier turns are ``history``.

    ``new_items`` is this turn's input as items. ``instructions`` apply to this turn only, as in the API.
    Raises InvalidRequest naming the parameter for a feature Chat Completions cannot express. Tools the
    platform would run itself are left out (their types appended to ``omitted``) or, with
    ``hosted_tools = "refuse"``, refused. ``chat_fields`` are the Responses fields the provider takes (its
    catalogue entry's); ``reasoning_field`` the assistant message field that carries reasoning back;
    ``found`` the tools a tool search loaded in the conversation (``tools.found_tools``), when known.
    """
    messages: list[dict] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    _append_items(messages, history, "input", reasoning_field=reasoning_field)
    _append_items(messages, not_in(new_items, history), "input", offset_param=True, reasoning_field=reasoning_field)
    _check_tool_outputs(messages)

    chat: dict[str, Any] = {k: v for k, v in body.items() if k not in _HANDLED}
    chat["model"] = body["model"]
    chat["messages"] = messages
    if found is None:
        found = client.found_tools(history, new_items)
    if body.get("tools") or found:
        offered = [*(body.get("tools") or []), *found] if found else body["tools"]
        tools = _chat_tools(offered, hosted_tools, omitted if omitted is not None else [], once=bool(found))
        tools = _allowed(tools, body.get("tool_choice"))
        if tools:
            chat["tools"] = tools
            if body.get("parallel_tool_calls") is not None:
                chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"], hosted_tools)
        offered = {t["function"]["name"] for t in chat.get("tools") or ()}
        if isinstance(choice, dict) and choice["function"]["name"] not in offered:
            choice = "auto"  # the tool it names was left out (a container's shell): the model picks among the rest
        if offered:  # chat APIs refuse a tool_choice without tools
            chat["tool_choice"] = choice
    if body.get("max_output_tokens") is not None:
        chat[max_tokens_param] = body["max_output_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("top_logprobs"):
        chat["logprobs"] = True
        chat["top_logprobs"] = body["top_logprobs"]
    for field in chat_fields:
        head, _, inner = field.partition(".")
        value = body.get(head)
        if inner:
            value = value.get(inner) if isinstance(value, dict) else None
        if value is not None:
            chat[_CHAT_NAMES.get(field, field.replace(".", "_"))] = value
    response_format = _response_format((body.get("text") or {}).get("format"))
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("stream"):
        chat["stream"] = True
        # Usage arrives in the last chunk only when asked for; response.completed must carry it.
        chat["stream_options"] = {"include_usage": True}
    return chat


def _append_items(
    messages: list[dict], items: list[dict], param: str, offset_param: bool = False, reasoning_field: str | None = None
) -> None:
    reasoning = None  # the text of a reasoning item, for the assistant message that follows it
    for index, item in enumerate(items):
        if reasoning and messages and messages[-1]["role"] == "assistant":
            messages[-1].setdefault(reasoning_field, reasoning)
            reasoning = None
        where = f"{param}[{index}]" if offset_param else param
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind in ("function_call", "custom_tool_call"):
            name = item.get("name")
            if isinstance(item.get("namespace"), str) and isinstance(name, str):
                name = chat_name(item["namespace"], name)
            if kind == "custom_tool_call":
                arguments = json.dumps({"input": item.get("input") if isinstance(item.get("input"), str) else ""})
            else:
                arguments = item.get("arguments") or ""
            call = {"id": item.get("call_id"), "type": "function", "function": {"name": name, "arguments": arguments}}
            if not isinstance(call["id"], str) or not isinstance(call["function"]["name"], str):
                raise InvalidRequest("A function_call item needs call_id and name.", param=where)
            _add_call(messages, call)
        elif kind in client.CALL_TYPES:
            if not isinstance(item.get("call_id"), str):
                continue  # run by the platform (a server tool search): its result is in what follows
            _add_call(messages, client.chat_call(item))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if not isinstance(item.get("call_id"), str):
                raise InvalidRequest("A function_call_output item needs a call_id.", param=f"{where}.call_id")
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": _tool_output(item, where)})
        elif kind in client.OUTPUT_TYPES:
            call_id = client.output_call_id(item)
            if isinstance(call_id, str):
                messages.append({"role": "tool", "tool_call_id": call_id, "content": client.output_text(item)})
        elif kind == "reasoning":
            # Taken back only by providers whose catalogue names the field; encrypted reasoning (a native
            # provider's) has no text to give.
            if reasoning_field:
                reasoning = _reasoning_text(item) or reasoning
        elif kind in _PLATFORM_ITEMS:
            # A history begun on a provider that ran these itself: what they found is in the answer after them.
            continue
        elif kind == "item_reference":
            # The relay replaces the references it can resolve; one left here names an item the gateway
            # never held (a native provider's, say), which a Chat Completions provider cannot look up.
            raise InvalidRequest(f"Item with id '{item.get('id')}' not found.", param=where, code="item_not_found")
        else:
            raise _unsupported(where, f"Input items of type '{kind}' are not available for this provider.")
    if reasoning and messages and messages[-1]["role"] == "assistant":
        messages[-1].setdefault(reasoning_field, reasoning)


def _reasoning_text(item: dict) -> str:
    parts = item.get("content") or item.get("summary") or []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


_CALL_ITEMS = frozenset(
    {"function_call", "function_call_output", "custom_tool_call", "custom_tool_call_output"}
    | set(client.CALL_TYPES)
    | set(client.OUTPUT_TYPES)
)
# Items of tools the platform runs, in a history that began on a native provider, and the tools an
# additional_tools item brings (offered to the model as tools, not as a message).
_PLATFORM_ITEMS = frozenset(
    {
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "computer_call",
        "computer_call_output",
        "mcp_list_tools",
        "mcp_call",
        "mcp_approval_request",
        "mcp_approval_response",
        "additional_tools",
    }
)


def _add_call(messages: list[dict], call: dict) -> None:
    last = messages[-1] if messages else None
    # Consecutive calls (and calls right after the assistant's text) form one assistant turn.
    if last is not None and last["role"] == "assistant" and not _followed_by_tool(messages):
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def not_in(items: list[dict], history: list[dict]) -> list[dict]:
    """This turn's items without those the history already holds: clients that keep their own list (LlamaIndex,
    strands) send the previous turn's calls and outputs again beside previous_response_id. Matched by item
    id, and calls and outputs by call_id; a message without an id is the caller's to repeat.
    """
    if not history or not items:
        return items
    ids = {i["id"] for i in history if isinstance(i.get("id"), str)}
    calls = {(i.get("type"), _call_id(i)) for i in history if i.get("type") in _CALL_ITEMS}
    return [
        i
        for i in items
        if not (isinstance(i.get("id"), str) and i["id"] in ids)
        and not (i.get("type") in _CALL_ITEMS and (i.get("type"), _call_id(i)) in calls)
    ]


def _call_id(item: dict) -> Any:
    return client.output_call_id(item) if item.get("type") in client.OUTPUT_TYPES else item.get("call_id")


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


def chat_name(namespace: str | None, name: str) -> str:
    """The Chat Completions name of a tool: ``{namespace}__{name}`` for a namespaced one, cut to 64 characters
    with 8 hex digits of the whole name's SHA-256 when longer (the same for the same names, every request).
    """
    full = f"{namespace}__{name}" if namespace else name
    if len(full) <= _NAME_MAX:
        return full
    return full[: _NAME_MAX - 9] + "_" + hashlib.sha256(full.encode()).hexdigest()[:8]


def tool_names(tools: Any) -> dict[str, tuple[str | None, str, str]]:
    """Chat Completions names of the tools that are not plain functions -> (namespace, name, type), to make
    their calls the client's items: a namespaced function's, or a custom tool's.
    """
    out: dict[str, tuple[str | None, str, str]] = {}
    for tool in tools or []:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function":
            continue  # called by its own name
        if kind != "custom" and kind != "namespace":
            spec = client.client_tool(tool) if kind else None
            if spec is not None:
                out[spec.type] = (None, spec.type, spec.type)
            continue
        if not isinstance(tool.get("name"), str):
            continue
        if kind == "custom":
            out[chat_name(None, tool["name"])] = (None, tool["name"], "custom")
        else:
            for inner in tool.get("tools") or []:
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    kind = "custom" if inner.get("type") == "custom" else "function"
                    out[chat_name(tool["name"], inner["name"])] = (tool["name"], inner["name"], kind)
    return out


def _chat_tools(tools: list, hosted_tools: str, omitted: list[str], once: bool = False) -> list[dict]:
    out = []
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "function" or kind == "custom":
            out.append(_tool(index, tool))
        elif kind == "namespace":
            if not isinstance(tool.get("name"), str) or not tool["name"]:
                raise InvalidRequest("A namespace tool needs a name.", param=f"tools[{index}].name")
            for inner_index, inner in enumerate(tool.get("tools") or []):
                where = f"tools[{index}].tools[{inner_index}]"
                if not isinstance(inner, dict) or inner.get("type") not in ("function", "custom"):
                    inner_kind = inner.get("type") if isinstance(inner, dict) else None
                    message = f"Tool type '{inner_kind}' in a namespace is not available for this provider."
                    raise _unsupported(where, message)
                out.append(_tool(where, inner, namespace=tool["name"]))
        elif (spec := client.client_tool(tool) if kind else None) is not None:
            out.append(client.function(tool, spec))
        elif hosted_tools == "refuse":
            raise _unsupported(
                f"tools[{index}]",
                f"Tool type '{kind}' is run by the platform and this provider cannot run it; the gateway's "
                "hosted_tools setting for it is 'refuse'.",
            )
        else:
            # A model cannot call a tool it is not shown: leaving it out is safe, and said in the reply.
            omitted.append(str(kind))
    if once:  # a tool found again by a later search is offered once: chat APIs refuse duplicate names
        return list({t["function"]["name"]: t for t in out}.values())
    return out


def _allowed(tools: list[dict], choice: Any) -> list[dict]:
    """``allowed_tools`` as every chat API can take it: the tools offered are only the allowed ones."""
    if not (isinstance(choice, dict) and choice.get("type") == "allowed_tools"):
        return tools
    names = set()
    for tool in choice.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        spec = client.client_tool({**tool, "execution": tool.get("execution", "client")})
        if spec is not None:
            names.add(spec.type)
        elif tool.get("type") == "namespace" and isinstance(tool.get("name"), str):
            prefix = tool["name"] + "__"
            names.update(t["function"]["name"] for t in tools if t["function"]["name"].startswith(prefix))
        elif isinstance(tool.get("name"), str):
            namespace = tool.get("namespace") if isinstance(tool.get("namespace"), str) else None
            names.add(chat_name(namespace, tool["name"]))
    return [t for t in tools if t["function"]["name"] in names]


def _tool(where: str | int, tool: dict, namespace: str | None = None) -> dict:
    if not isinstance(tool.get("name"), str):
        where = f"tools[{where}]" if isinstance(where, int) else where
        raise InvalidRequest("A function tool needs a name.", param=f"{where}.name")
    name = chat_name(namespace, tool["name"])
    if tool.get("type") == "custom":
        return {"type": "function", "function": _custom_function(name, tool)}
    function: dict[str, Any] = {"name": name, "parameters": tool.get("parameters") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _custom_function(name: str, tool: dict) -> dict:
    """A custom tool (its input free text, perhaps held to a grammar) as a function of one string, ``input``.

    Chat Completions cannot hold a model to a grammar: the grammar is given to the model to follow.
    """
    described = tool.get("description") or ""
    fmt = tool.get("format") if isinstance(tool.get("format"), dict) else {}
    if fmt.get("type") == "grammar" and isinstance(fmt.get("definition"), str):
        syntax = fmt.get("syntax") or "grammar"
        described += f"\n\nThe input must follow this {syntax} grammar:\n{fmt['definition']}"
    parameters = {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's whole input, as free text."}},
        "required": ["input"],
        "additionalProperties": False,
    }
    function = {"name": name, "parameters": parameters}
    if described.strip():
        function["description"] = described.strip()
    return function


def custom_input(arguments: str) -> str:
    """A custom tool's input from the arguments a chat model gave its function (``{"input": ...}``)."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return arguments  # a model that wrote the text itself rather than the object
    if isinstance(value, dict) and isinstance(value.get("input"), str):
        return value["input"]
    return arguments


def _tool_choice(choice: Any, hosted_tools: str = "omit") -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        namespace = choice.get("namespace") if isinstance(choice.get("namespace"), str) else None
        return {"type": "function", "function": {"name": chat_name(namespace, choice["name"])}}
    if isinstance(choice, dict) and choice.get("type") == "custom" and isinstance(choice.get("name"), str):
        namespace = choice.get("namespace") if isinstance(choice.get("namespace"), str) else None
        return {"type": "function", "function": {"name": chat_name(namespace, choice["name"])}}
    if isinstance(choice, dict) and choice.get("type") in ("shell", "apply_patch", "local_shell"):
        return {"type": "function", "function": {"name": choice["type"]}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        # The offered tools are cut to the allowed ones (_allowed); the mode is what remains of the choice.
        return "required" if choice.get("mode") == "required" else "auto"
    hosted = isinstance(choice, dict) and choice.get("type") not in ("function", "allowed_tools", "custom", "mcp")
    if hosted and hosted_tools == "omit":
        return "auto"  # a tool left out cannot be chosen: the model chooses among the others
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

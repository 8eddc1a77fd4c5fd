"""The built-in mock model: a deterministic provider served in-process, for trying the gateway without a key.

It answers the Chat Completions and Responses wire formats, JSON and SSE, at once and always the same way
for the same request, so it also serves demos, CI and benchmarks. The catalogue names it by a ``mock://``
base URL, which upstream.py routes here instead of opening a socket.

The model: the last message is a tool result -> ``Tool said: <results>``; function tools are offered (and
``tool_choice`` is not ``none``) -> a call to the first one (the first two when parallel calls are allowed),
with arguments ``{"input": <last user text>}``; otherwise ``Echo <n>: <last user text>``, where ``n``
counts the user messages in the conversation (so a chain's third turn says ``Echo 3``), as
``{"echo": ...}`` under a JSON format, cut to ``max_tokens`` words (finish reason ``length``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from . import sse

SCHEME = "mock://"
MODELS = ("mock-1",)


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the mock answers: a status, a content type and the body in the pieces a network would bring."""

    status: int
    content_type: str
    chunks: Iterator[bytes]


def answer(method: str, path: str, body: bytes | None) -> Answer:
    """Answer one call; ``path`` is the part of the URL after the provider's base URL (``/chat/completions``)."""
    path = path.split("?", 1)[0].rstrip("/")
    if method == "GET" and path == "/models":
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "gateway-mock"} for m in MODELS]
        return _json(200, {"object": "list", "data": data})
    if method == "POST" and path in ("/chat/completions", "/responses"):
        try:
            request = json.loads(body or b"")
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        if path == "/chat/completions":
            return _chat(request)
        return _responses(request)
    if path.startswith("/responses/"):
        # The mock keeps nothing; the gateway's store serves what the emulated `mock` provider made.
        return _error(
            404,
            "The mock provider keeps no responses: use provider 'mock' (emulated, kept in the gateway's store) "
            "to read responses back.",
        )
    return _error(404, f"The mock provider has no endpoint {method} {path}.")


# ---------------------------------------------------------------------- the model
def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and isinstance(p.get("text"), str))


def complete(chat: dict) -> dict:
    """The model's answer to a Chat Completions body: content, tool calls, finish reason and usage."""
    messages = [m for m in chat.get("messages") or [] if isinstance(m, dict)]
    users = [m for m in messages if m.get("role") == "user"]
    last_user = _text_of(users[-1].get("content")) if users else ""
    tools = [t for t in chat.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    choice = chat.get("tool_choice")
    calls: list[dict] = []
    content: str | None
    if messages and messages[-1].get("role") == "tool":
        results = [_text_of(m.get("content")) for m in messages if m.get("role") == "tool"]
        content = "Tool said: " + "; ".join(results)
    elif tools and choice != "none":
        chosen = tools[:2] if chat.get("parallel_tool_calls", True) is not False else tools[:1]
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
            chosen = [t for t in tools if t["function"].get("name") == name][:1]
        arguments = json.dumps({"input": last_user})
        calls = [
            {
                "id": "call_" + _digest(chat, i),
                "type": "function",
                "function": {"name": t["function"].get("name", ""), "arguments": arguments},
            }
            for i, t in enumerate(chosen)
        ]
        content = None
    else:
        content = f"Echo {len(users)}: {last_user}"
        if (chat.get("response_format") or {}).get("type") in ("json_schema", "json_object"):
            content = json.dumps({"echo": content})
    finish = "tool_calls" if calls else "stop"
    limit = chat.get("max_tokens") or chat.get("max_completion_tokens")
    if content and isinstance(limit, int) and len(content.split(" ")) > limit:
        content = " ".join(content.split(" ")[:limit])
        finish = "length"
    prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
    completion_tokens = len((content or "").split()) + 5 * len(calls)
    return {
        "content": content,
        "tool_calls": calls,
        "finish_reason": finish,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _digest(chat: dict, salt: int) -> str:
    """An id that depends only on the request: the same request always gets the same answer."""
    raw = json.dumps(chat.get("messages"), sort_keys=True, default=str).encode() + b"%d" % salt
    return hashlib.sha256(raw).hexdigest()[:24]


# ---------------------------------------------------------------------- Chat Completions
def _chat(chat: dict) -> Answer:
    if not isinstance(chat.get("messages"), list) or not chat["messages"]:
        return _error(400, "messages must be a non-empty array", param="messages")
    result = complete(chat)
    base = {
        "id": "chatcmpl-" + _digest(chat, -1),
        "created": int(time.time()),
        "model": chat.get("model") or MODELS[0],
    }
    if chat.get("stream"):
        include_usage = bool((chat.get("stream_options") or {}).get("include_usage"))
        return Answer(200, "text/event-stream", _chat_chunks(base, result, include_usage))
    message: dict[str, Any] = {"role": "assistant", "content": result["content"]}
    if result["tool_calls"]:
        message["tool_calls"] = result["tool_calls"]
    return _json(
        200,
        {
            **base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": result["finish_reason"]}],
            "usage": result["usage"],
        },
    )


def _chat_chunks(base: dict, result: dict, include_usage: bool) -> Iterator[bytes]:
    """One chunk per word, as a model streams; a tool call's arguments come in two pieces."""

    def chunk(delta: dict | None, finish: str | None = None, **extra: Any) -> bytes:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        payload = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for i, word in enumerate((result["content"] or "").split(" ") if result["content"] else []):
        yield chunk({"content": word if i == 0 else " " + word})
    for index, call in enumerate(result["tool_calls"]):
        function = call["function"]
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": function["name"]}}
        head["function"]["arguments"] = ""
        yield chunk({"tool_calls": [head]})
        half = len(function["arguments"]) // 2
        for piece in (function["arguments"][:half], function["arguments"][half:]):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, result["finish_reason"])
    if include_usage:
        yield chunk(None, usage=result["usage"])
    yield b"data: [DONE]\n\n"


# ---------------------------------------------------------------------- Responses
def _responses(body: dict) -> Answer:
    """The Responses API, stateless: this turn's input is the conversation, built by the gateway's own
    emulation from the model's chat answer (the same objects and events an emulated provider gets).
    """
    from .emulation import request as translate
    from .emulation import response as build
    from .emulation.stream import StreamTranslator
    from .errors import GatewayError
    from .items import input_items_of

    if not isinstance(body.get("model"), str):
        return _error(400, "Missing required parameter: 'model'.", param="model")
    try:
        chat = translate.to_chat(body, [], input_items_of(body.get("input"), mint=False), max_tokens_param="max_tokens")
    except GatewayError as err:
        return _error(err.status, err.message, param=err.param)
    result = complete(chat)
    response_id = build.new_id("resp")
    previous = body.get("previous_response_id")
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": result["content"]}
        if result["tool_calls"]:
            message["tool_calls"] = result["tool_calls"]
        completion = {"choices": [{"message": message, "finish_reason": result["finish_reason"]}], **result}
        return _json(200, build.from_chat(body, completion, response_id, previous))
    translator = StreamTranslator(build.skeleton(body, response_id, int(time.time()), previous))
    base = {"id": response_id, "created": 0, "model": body["model"]}
    return Answer(200, "text/event-stream", _response_events(translator, _chat_chunks(base, result, True)))


def _response_events(translator: Any, chunks: Iterator[bytes]) -> Iterator[bytes]:
    # The mock answers as a provider would: bytes on the wire.
    for event in translator.start():
        yield event.raw
    for event in sse.iter_events(chunks):
        payload = event.json()
        if payload is not None:
            for made in translator.feed(payload):
                yield made.raw
    _, closing = translator.complete()
    for event in closing:
        yield event.raw


# ---------------------------------------------------------------------- plumbing
def _json(status: int, payload: dict) -> Answer:
    return Answer(status, "application/json", iter([json.dumps(payload).encode()]))


def _error(status: int, message: str, param: str | None = None) -> Answer:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return _json(status, {"error": {"message": message, "type": kind, "param": param, "code": None}})

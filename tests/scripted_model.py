"""A scripted model that drives tools, served as a provider on 127.0.0.1 in both API kinds.

``/v1/chat/completions`` (an emulated provider) and ``/v1/responses`` (a native one, with its own store,
``previous_response_id``, ``item_reference``, ``input_items``) answer from the same script, so one scenario
runs unchanged against both. ``/v1/models`` lists the script's one model.

The script, for the turn that starts at the last user message:

- tools offered that it has not called yet in this turn are *pending*; while any is, it calls the first
  one, or every pending one at once when the user's text says "parallel" (and parallel calls are allowed);
- when the user's text says "narrate", it writes a sentence beside its calls;
- once nothing is pending it answers ``Answer to '<user text>': <tool results joined by '; '>``.

A coding agent's turn (Codex) is directed instead: "run `CMD`" calls the shell tool it is offered (a
function with ``cmd``, ``commands`` or ``command``) once with CMD, and "write `TEXT` to `PATH`" calls
``apply_patch`` (freeform: a patch adding the file; as the apply_patch tool: a create_file operation).

Streams split each call's arguments in three pieces, and interleave the pieces of parallel calls as Chat
Completions providers may (tool-call deltas are keyed by ``index``).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MODEL = "scripted-1"
NARRATION = "Let me look that up."
_counter = itertools.count(1)
_PREFIX = os.urandom(3).hex()


def _id(prefix: str) -> str:
    return f"{prefix}_{_PREFIX}{next(_counter):012x}"


# ---------------------------------------------------------------------------------------------- the script
def arguments_for(parameters: dict | None) -> str:
    """Arguments that satisfy a JSON schema's properties: every property, a fixed value per type."""
    values: dict[str, Any] = {}
    for name, schema in ((parameters or {}).get("properties") or {}).items():
        kind = schema.get("type")
        if schema.get("enum"):
            values[name] = schema["enum"][0]
        elif kind == "integer":
            values[name] = 3
        elif kind == "number":
            values[name] = 1.5
        elif kind == "boolean":
            values[name] = True
        else:
            values[name] = "Paris" if "city" in name else f"{name}-value"
    return json.dumps(values)


def _directed(user_text: str, tools: list[dict]) -> tuple[str, str] | None:
    """(tool name, arguments) a coding agent's prompt asks for, from the tools offered; None if none does."""
    run = re.search(r"run `([^`]+)`", user_text)
    write = re.search(r"write `([^`]+)` to `([^`]+)`", user_text)
    for tool in tools:
        properties = (tool.get("parameters") or {}).get("properties") or {}
        if run and "cmd" in properties:
            return tool["name"], json.dumps({"cmd": run[1]})
        if run and "commands" in properties:
            return tool["name"], json.dumps({"commands": [run[1]]})
        if run and (properties.get("command") or {}).get("type") == "array":
            return tool["name"], json.dumps({"command": ["bash", "-lc", run[1]]})
        if write and tool["name"] == "apply_patch" and "input" in properties:
            patch = f"*** Begin Patch\n*** Add File: {write[2]}\n+{write[1]}\n*** End Patch\n"
            return tool["name"], json.dumps({"input": patch})
        if write and tool["name"] == "apply_patch" and "diff" in properties:
            return tool["name"], json.dumps({"type": "create_file", "path": write[2], "diff": f"+{write[1]}\n"})
    return None


def decide(
    user_text: str, called: list[str], results: list[str], tools: list[dict], *, parallel: bool, tool_choice: Any
) -> tuple[str | None, list[dict]]:
    """(text, calls) for the turn so far: tools as {"name", "parameters"}, calls as {"name", "arguments"}."""
    directed = _directed(user_text, tools)
    if directed is not None:
        tools = [t for t in tools if t["name"] == directed[0]]
        if directed[0] not in called:
            return None, [{"name": directed[0], "arguments": directed[1]}]
        tool_choice = "none"
    pending = [t for t in tools if t["name"] not in called] if tool_choice != "none" else []
    if pending:
        chosen = pending if "parallel" in user_text and parallel else pending[:1]
        calls = [{"name": t["name"], "arguments": arguments_for(t.get("parameters"))} for t in chosen]
        return (NARRATION if "narrate" in user_text else None), calls
    answer = f"Answer to '{user_text}'"
    return (answer + ": " + "; ".join(results) if results else answer), []


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def _pieces(text: str, n: int = 3) -> list[str]:
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _usage_chat() -> dict:
    return {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}


# ---------------------------------------------------------------------------------------------- the server
class ScriptedModel:
    """The server and the native side's memory; ``start()`` runs it on a free port."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.responses: dict[str, dict] = {}
        self.inputs: dict[str, list[dict]] = {}  # response id -> its input items, as listed
        self.items: dict[str, dict] = {}  # every item id the native side has seen -> the item
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.model = self  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> ScriptedModel:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self, path: str) -> list[dict]:
        """The JSON bodies received at ``path`` (e.g. ``/v1/chat/completions``), oldest first."""
        with self.lock:
            return [r["body"] for r in self.requests if r["path"] == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    @property
    def model(self) -> ScriptedModel:
        return self.server.model  # type: ignore[attr-defined]

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        self._json(
            status, {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        )

    def _sse(self, payloads: list[tuple[str | None, dict | str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event, payload in payloads:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            frame = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
            raw = frame.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _path(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return parts.path, parse_qs(parts.query)

    # -------------------------------------------------------------------------------- routes
    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        path, _ = self._path()
        with self.model.lock:
            self.model.requests.append({"method": "POST", "path": path, "body": body})
        if path == "/v1/chat/completions":
            return self._chat(body)
        if path == "/v1/responses":
            return self._responses(body)
        self._error(404, "Unknown path")

    def do_GET(self) -> None:
        path, query = self._path()
        segments = [s for s in path.split("/") if s][1:]
        if segments == ["models"]:
            return self._json(200, {"object": "list", "data": [_model_object()]})
        if len(segments) == 2 and segments[0] == "models":
            if segments[1] != MODEL:
                return self._error(404, f"The model '{segments[1]}' does not exist", "model", "model_not_found")
            return self._json(200, _model_object())
        if len(segments) >= 2 and segments[0] == "responses":
            response = self.model.responses.get(segments[1])
            if response is None:
                return self._error(404, f"Response with id '{segments[1]}' not found.")
            if len(segments) == 2:
                return self._json(200, response)
            if segments[2:] == ["input_items"]:
                return self._json(200, _page(self.model.inputs[segments[1]], query))
        self._error(404, "Unknown path")

    def do_DELETE(self) -> None:
        path, _ = self._path()
        segments = [s for s in path.split("/") if s][1:]
        if len(segments) == 2 and segments[0] == "responses" and self.model.responses.pop(segments[1], None):
            return self._json(200, {"id": segments[1], "object": "response", "deleted": True})
        self._error(404, "Response not found.")

    # -------------------------------------------------------------------------------- chat completions
    def _chat(self, body: dict) -> None:
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        turn = messages[last_user + 1 :]
        called = [c["function"]["name"] for m in turn for c in m.get("tool_calls") or []]
        results = [_text_of(m["content"]) for m in turn if m["role"] == "tool"]
        tools = [
            {"name": t["function"]["name"], "parameters": t["function"].get("parameters")}
            for t in body.get("tools") or []
        ]
        text, calls = decide(
            _text_of(messages[last_user]["content"]),
            called,
            results,
            tools,
            parallel=body.get("parallel_tool_calls", True) is not False,
            tool_choice=body.get("tool_choice"),
        )
        tool_calls = [
            {"id": _id("call"), "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls
        ]
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return self._json(
                200,
                {
                    "id": _id("chatcmpl"),
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": MODEL,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": _usage_chat(),
                },
            )
        base = {"id": _id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL}

        def chunk(delta: dict, finish_reason: str | None = None) -> tuple[None, dict]:
            return None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

        out = [chunk({"role": "assistant", "content": ""})]
        out += [chunk({"content": piece}) for piece in _pieces(text or "") if piece]
        for index, call in enumerate(tool_calls):
            head = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"]},
            }
            out.append(chunk({"tool_calls": [{**head, "function": {**head["function"], "arguments": ""}}]}))
        # Round-robin over the calls: piece 1 of every call, then piece 2 of every call, ...
        split = [_pieces(call["function"]["arguments"]) for call in tool_calls]
        for round_ in itertools.zip_longest(*split):
            for index, piece in enumerate(round_):
                if piece:
                    out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        out.append(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            out.append((None, {**base, "choices": [], "usage": _usage_chat()}))
        self._sse([*out, (None, "[DONE]")])

    # -------------------------------------------------------------------------------- responses
    def _responses(self, body: dict) -> None:
        model = self.model
        history: list[dict] = []
        prev = body.get("previous_response_id")
        if prev:
            if prev not in model.responses:
                return self._error(
                    400,
                    f"Previous response with id '{prev}' not found.",
                    "previous_response_id",
                    "previous_response_not_found",
                )
            history = _chain(model, prev)
        raw_input = body.get("input")
        given = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else list(raw_input or [])
        inputs: list[dict] = []
        for i, item in enumerate(given):
            if item.get("type") == "item_reference":
                found = model.items.get(item.get("id"))
                if found is None:
                    return self._error(404, f"Item with id '{item.get('id')}' not found.", f"input[{i}]")
                inputs.append(found)
            else:
                inputs.append(_listed(item))
        items = history + inputs
        last_user = max(i for i, it in enumerate(items) if it["type"] == "message" and it["role"] == "user")
        turn = items[last_user + 1 :]
        tools = [t for t in body.get("tools") or [] if t.get("type") == "function"] + [
            {**t, "parameters": _FREEFORM} for t in body.get("tools") or [] if t.get("type") == "custom"
        ]
        custom = {t["name"] for t in tools if t.get("type") == "custom"}
        text, calls = decide(
            _text_of(items[last_user]["content"]),
            [it["name"] for it in turn if it["type"] in ("function_call", "custom_tool_call")],
            [_text_of(it["output"]) for it in turn if it["type"] in _OUTPUTS],
            tools,
            parallel=body.get("parallel_tool_calls", True) is not False,
            tool_choice=body.get("tool_choice"),
        )
        output = []
        if text is not None:
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            output.append(
                {"type": "message", "id": _id("msg"), "status": "completed", "role": "assistant", "content": [part]}
            )
        for call in calls:
            if call["name"] in custom:
                output.append(
                    {
                        "type": "custom_tool_call",
                        "id": _id("ctc"),
                        "call_id": _id("call"),
                        "name": call["name"],
                        "input": json.loads(call["arguments"]).get("input", ""),
                    }
                )
                continue
            output.append(
                {
                    "type": "function_call",
                    "id": _id("fc"),
                    "call_id": _id("call"),
                    "name": call["name"],
                    "arguments": call["arguments"],
                    "status": "completed",
                }
            )
        response = _response(body, output)
        if body.get("store", True) is not False:
            with model.lock:
                model.responses[response["id"]] = response
                model.inputs[response["id"]] = inputs
                for item in [*inputs, *output]:
                    model.items[item["id"]] = item
        if body.get("stream"):
            return self._sse([(e["type"], e) for e in _events(response)])
        self._json(200, response)


_OUTPUTS = ("function_call_output", "custom_tool_call_output")
# A custom (freeform) tool's input, as the script fills it in.
_FREEFORM = {"type": "object", "properties": {"input": {"type": "string"}}}


def _model_object() -> dict:
    return {"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "tests"}


def _listed(item: dict) -> dict:
    """An input item as the API lists it: an id, a status, typed content parts."""
    out = {"type": "message", **item}
    out.setdefault("id", _id({"message": "msg", "function_call": "fc"}.get(out["type"], "item")))
    if out["type"] in ("message", "function_call", "function_call_output"):
        out.setdefault("status", "completed")
    if out["type"] == "message":
        assistant = out.get("role") == "assistant"
        content = out.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        out["content"] = [
            {"type": "output_text", "text": p.get("text", ""), "annotations": [], "logprobs": []}
            if assistant and p.get("type") in ("text", "output_text")
            else {"type": "input_text", "text": p.get("text", "")}
            if p.get("type") in ("text", "input_text")
            else p
            for p in parts
        ]
    return out


def _chain(model: ScriptedModel, response_id: str) -> list[dict]:
    chain = []
    current: str | None = response_id
    while current:
        chain.append(current)
        current = model.responses[current].get("previous_response_id")
    items: list[dict] = []
    for rid in reversed(chain):
        items += model.inputs[rid] + model.responses[rid]["output"]
    return items


def _response(body: dict, output: list[dict]) -> dict:
    now = int(time.time())
    return {
        "id": _id("resp"),
        "object": "response",
        "created_at": now,
        "status": "completed",
        "completed_at": now,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": MODEL,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": [{"description": None, "strict": True, **t} for t in body.get("tools") or []],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 20,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 30,
        },
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _events(final: dict) -> list[dict]:
    """The event sequence of a finished response, one item after another, numbered from 0."""
    start = {**final, "status": "in_progress", "completed_at": None, "output": [], "usage": None}
    events: list[dict] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
    ]
    for index, item in enumerate(final["output"]):
        at = {"output_index": index, "item_id": item["id"]}
        if item["type"] == "message":
            part = item["content"][0]
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "content": []},
                }
            )
            events.append(
                {"type": "response.content_part.added", **at, "content_index": 0, "part": {**part, "text": ""}}
            )
            for piece in _pieces(part["text"]):
                events.append(
                    {"type": "response.output_text.delta", **at, "content_index": 0, "delta": piece, "logprobs": []}
                )
            events.append(
                {"type": "response.output_text.done", **at, "content_index": 0, "text": part["text"], "logprobs": []}
            )
            events.append({"type": "response.content_part.done", **at, "content_index": 0, "part": part})
        elif item["type"] == "custom_tool_call":
            events.append({"type": "response.output_item.added", "output_index": index, "item": {**item, "input": ""}})
            events.append({"type": "response.custom_tool_call_input.delta", **at, "delta": item["input"]})
            events.append({"type": "response.custom_tool_call_input.done", **at, "input": item["input"]})
        else:
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "status": "in_progress", "arguments": ""},
                }
            )
            for piece in _pieces(item["arguments"]):
                events.append({"type": "response.function_call_arguments.delta", **at, "delta": piece})
            events.append(
                {
                    "type": "response.function_call_arguments.done",
                    **at,
                    "name": item["name"],
                    "arguments": item["arguments"],
                }
            )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": final})
    return [{**e, "sequence_number": n} for n, e in enumerate(events)]


def _page(items: list[dict], query: dict[str, list[str]]) -> dict:
    ordered = list(items) if query.get("order", ["desc"])[0] == "asc" else list(reversed(items))
    after = query.get("after", [None])[0]
    if after:
        ids = [i["id"] for i in ordered]
        ordered = ordered[ids.index(after) + 1 :] if after in ids else []
    limit = int(query.get("limit", ["20"])[0])
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(ordered) > limit,
    }

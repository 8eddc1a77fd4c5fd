"""A fake OpenAI provider: a real HTTP server on 127.0.0.1 for tests and demos.

It implements the Responses endpoints (JSON and SSE in the reference's event order) and keeps what it
creates in memory. Faults are injected with knobs: attributes of ``FakeProvider.knobs`` for every request,
or ``metadata`` keys ``fake_<knob>`` on one create request:

  status         answer this HTTP status with an OpenAI error body (or ``body`` as given)
  body           raw body to send with ``status`` (e.g. a non-JSON error page)
  delay_ms       wait before the status line
  first_ms       streams: wait between response.in_progress and the first delta
  gap_ms         streams: wait between deltas
  deltas         streams: number of text deltas
  cut_after      streams: drop the connection (no chunked terminator) after this many events
  end_after      streams: end the stream cleanly but early, after this many events
  fail_first     fail this many requests (with fail_status, default 500), then answer normally
  retry_after    a Retry-After header on injected errors
  echo_headers   injected errors quote the request's headers (credentials included), as a leaky upstream would
  endless        a 200 JSON body that never ends
  usage          Responses: this usage object in place of the fake's own (cached, reasoning tokens...)
  chat_usage     Chat Completions: this usage object in place of the fake's own
  fail_stream    Responses streams: end with response.failed (the final response failed, with its usage)

Run ``python -m tests.fake_provider --port 18000`` for a standalone demo provider.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_counter = itertools.count(1)
_PREFIX = os.urandom(4).hex()


def new_id(prefix: str) -> str:
    return f"{prefix}_{_PREFIX}{next(_counter):016x}"


def _text_of(items: list[dict]) -> str:
    """The last user text in a list of input items."""
    for item in reversed(items):
        if item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            for part in content or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    return part.get("text", "")
    return ""


def _message_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def chat_answer(body: dict, knobs: dict[str, Any]) -> dict:
    """A deterministic model: it echoes, calls tools when offered, and obeys formats and token limits.

    - the last message is a tool result: "Tool said: <results>"
    - tools offered: calls the first tool (the first two when parallel calls are allowed and there are two)
    - otherwise "Echo <number of user messages>: <last user text>", as JSON under a json format
    """
    messages = body["messages"]
    users = [m for m in messages if m.get("role") == "user"]
    last_user = _message_text(users[-1]) if users else ""
    tools = [t for t in body.get("tools") or [] if t.get("type") == "function"]
    tool_calls: list[dict] = []
    content: str | None
    if messages[-1].get("role") == "tool":
        results = [m["content"] for m in messages if m.get("role") == "tool"]
        content = "Tool said: " + "; ".join(r if isinstance(r, str) else json.dumps(r) for r in results)
    elif tools and body.get("tool_choice") != "none":
        chosen = tools[:2] if body.get("parallel_tool_calls", True) is not False and len(tools) > 1 else tools[:1]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            chosen = [t for t in tools if t["function"]["name"] == choice["function"]["name"]]
        tool_calls = [
            {
                "id": new_id("call"),
                "type": "function",
                "function": {"name": t["function"]["name"], "arguments": json.dumps({"query": last_user})},
            }
            for t in chosen
        ]
        content = None
    else:
        content = f"Echo {len(users)}: {last_user}"
        fmt = (body.get("response_format") or {}).get("type")
        if fmt in ("json_schema", "json_object"):
            content = json.dumps({"echo": content})
    finish = "tool_calls" if tool_calls else "stop"
    limit = body.get("max_tokens") or body.get("max_completion_tokens")
    if content and limit and len(content.split(" ")) > limit:
        content = " ".join(content.split(" ")[:limit])
        finish = "length"
    completion_tokens = len((content or "").split()) + 5 * len(tool_calls)
    prompt_tokens = sum(len(_message_text(m).split()) for m in messages) + 3
    usage = knobs.get("chat_usage") or {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    return {
        "content": content,
        "tool_calls": tool_calls,
        "reasoning": knobs.get("reasoning"),
        "finish_reason": finish,
        "usage": usage,
    }


class _Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 drops connections when hundreds of streams open at once.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client dropping an idle keep-alive connection is normal; anything else is still printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeProvider:
    """The server and its memory; ``start()`` runs it on a free port in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.knobs: dict[str, Any] = {}
        self.models: list[str] = []  # what GET /models lists
        self.responses: dict[str, dict] = {}
        self.input_items: dict[str, list[dict]] = {}
        self.requests: list[dict] = []
        self.sent: list[str] = []  # event types written by streams, in order
        self.disconnects = 0
        self.failures = 0  # how many requests the fail_first knob has failed so far
        self.disconnected = threading.Event()
        self.lock = threading.Lock()
        self.server = _Server((host, port), _Handler)
        self.server.daemon_threads = True
        self.server.fake = self  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeProvider:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.knobs.clear()
            self.requests.clear()
            self.sent.clear()
            self.disconnects = 0
            self.failures = 0
            self.disconnected.clear()
            self.models = []

    # ----------------------------------------------------------------- the model
    def build_response(self, body: dict) -> tuple[dict, list[dict]]:
        """A completed Response for ``body``, and its input items with ids."""
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw_input}]}]
        else:
            items = [dict(item) for item in raw_input or []]
        for item in items:
            item.setdefault("id", new_id("msg"))
            item.setdefault("status", "completed")
        turn = 1
        prev = body.get("previous_response_id")
        while prev and prev in self.responses:
            turn += 1
            prev = self.responses[prev].get("previous_response_id")
        text = f"Echo {turn}: {_text_of(items)}"
        resp = {
            "id": new_id("resp"),
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "completed_at": int(time.time()),
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": body.get("model"),
            "output": [
                {
                    "type": "message",
                    "id": new_id("msg"),
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True) is not False,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": 10,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": len(text.split()),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 10 + len(text.split()),
            },
            "user": None,
            "metadata": body.get("metadata") or {},
        }
        return resp, items

    def keep(self, resp: dict, items: list[dict]) -> None:
        if resp.get("store"):
            with self.lock:
                self.responses[resp["id"]] = resp
                self.input_items[resp["id"]] = items


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeProvider/1"
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add 40 ms to each answer.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    @property
    def fake(self) -> FakeProvider:
        return self.server.fake  # type: ignore[attr-defined]

    # ------------------------------------------------------------- plumbing
    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_" + os.urandom(6).hex())
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._send_json(status, {"error": {"message": message, "type": kind, "param": param, "code": code}})

    def _knobs(self, body: dict | None) -> dict[str, Any]:
        knobs = dict(self.fake.knobs)
        # Chat requests carry knobs in an extra top-level "fake" object (metadata is not sent upstream there).
        knobs.update((body or {}).get("fake") or {})
        metadata = (body or {}).get("metadata") or {}
        for key, value in metadata.items():
            if key.startswith("fake_"):
                knobs[key[5:]] = value
        return knobs

    def _record(self, body: Any) -> None:
        with self.fake.lock:
            self.fake.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body,
                    "at": time.monotonic(),
                }
            )

    def _fault(self, knobs: dict[str, Any]) -> bool:
        """Apply delay and status knobs; True when an error answer was sent."""
        if knobs.get("delay_ms"):
            time.sleep(float(knobs["delay_ms"]) / 1000)
        if knobs.get("endless"):
            self._endless()
            return True
        status = int(knobs.get("status") or 0)
        if knobs.get("fail_first"):
            with self.fake.lock:
                failing = self.fake.failures < int(knobs["fail_first"])
                self.fake.failures += failing
            status = int(knobs.get("fail_status", 500)) if failing else 0
        if status:
            if "body" in knobs:
                raw = str(knobs["body"]).encode()
                self.send_response(status)
                self.send_header("Content-Type", knobs.get("content_type", "text/html"))
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            else:
                headers = {"Retry-After": str(knobs["retry_after"])} if "retry_after" in knobs else {}
                message = f"Injected {status}"
                if knobs.get("echo_headers"):
                    # As some proxies and debugging upstreams do: the request's headers, credentials and all.
                    message += f"; request headers: {dict(self.headers)}"
                self._send_json(
                    status,
                    {"error": {"message": message, "type": "server_error", "param": None, "code": None}},
                    headers,
                )
            return True
        return False

    def _endless(self) -> None:
        """A 200 whose JSON body never ends (bounded at 10 s), until the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b'{"padding": "' + b"x" * 65536
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                chunk = b"x" * 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        parts = urlsplit(self.path)
        segments = [s for s in parts.path.split("/") if s]
        if segments and segments[0] == "v1":
            segments = segments[1:]
        return segments, parse_qs(parts.query)

    def _authorised(self) -> bool:
        required = self.fake.knobs.get("api_key")
        if required and self.headers.get("Authorization") != f"Bearer {required}":
            self._error(401, "Incorrect API key provided.", "invalid_api_key")
            return False
        return True

    # ------------------------------------------------------------- endpoints
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._record(body)
        segments, _ = self._route()
        if isinstance(body, dict) and self._counting(segments, body):
            return
        if segments not in (["responses"], ["chat", "completions"]):
            return self._error(404, "Unknown path")
        if not isinstance(body, dict):
            return self._error(400, "We could not parse the JSON body of your request.")
        if not self._authorised():
            return
        if segments == ["chat", "completions"]:
            return self._chat(body)
        knobs = self._knobs(body)
        if self._fault(knobs):
            return
        prev = body.get("previous_response_id")
        if prev and prev not in self.fake.responses:
            return self._error(
                400,
                f"Previous response with id '{prev}' not found.",
                "previous_response_not_found",
                "previous_response_id",
            )
        resp, items = self.fake.build_response(body)
        if isinstance(knobs.get("usage"), dict):
            resp["usage"] = knobs["usage"]
        if body.get("stream"):
            return self._stream(resp, items, knobs)
        self.fake.keep(resp, items)
        self._send_json(200, resp)

    def _counting(self, segments: list[str], body: dict) -> bool:
        """The compact and token-count endpoints: True when ``segments`` named one and it was answered.

        Counts are the number of words in the request's JSON, whatever its shape; a compaction's item is
        the provider's own (its encrypted_content starts ``fake-compaction:``).
        """
        words = len(json.dumps(body).split())
        if segments == ["responses", "input_tokens"]:
            self._send_json(200, {"object": "response.input_tokens", "input_tokens": words})
        elif segments == ["messages", "count_tokens"]:
            if not self.headers.get("x-api-key") or not self.headers.get("anthropic-version"):
                self._error(401, "x-api-key and anthropic-version are required")
            else:
                self._send_json(200, {"input_tokens": words})
        elif len(segments) == 2 and segments[0] == "models" and segments[1].endswith(":countTokens"):
            if not self.headers.get("x-goog-api-key") or "generateContentRequest" not in body:
                self._error(400, "x-goog-api-key and generateContentRequest are required")
            else:
                self._send_json(200, {"totalTokens": words})
        elif segments == ["responses", "compact"]:
            item = {"id": new_id("cmp"), "type": "compaction", "encrypted_content": f"fake-compaction:{words}"}
            usage = {
                "input_tokens": words,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 1,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": words + 1,
            }
            self._send_json(
                200,
                {
                    "id": new_id("resp"),
                    "object": "response.compaction",
                    "created_at": int(time.time()),
                    "output": [item],
                    "usage": usage,
                },
            )
        else:
            return False
        return True

    def _stream(self, final: dict, items: list[dict], knobs: dict[str, Any]) -> None:
        message = final["output"][0]
        text = message["content"][0]["text"]
        n = max(1, int(knobs.get("deltas", 5)))
        words = text.split(" ")
        size = max(1, -(-len(words) // n))
        pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
        pieces = [p if i == 0 else " " + p for i, p in enumerate(pieces)]
        start = {**final, "status": "in_progress", "output": [], "usage": None, "completed_at": None}
        item_id = message["id"]
        events: list[tuple[dict, float]] = [
            ({"type": "response.created", "response": start}, 0),
            ({"type": "response.in_progress", "response": start}, 0),
            (
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {**message, "status": "in_progress", "content": []},
                },
                0,
            ),
            (
                {
                    "type": "response.content_part.added",
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []},
                },
                0,
            ),
        ]
        for i, piece in enumerate(pieces):
            wait = float(knobs.get("first_ms", 0) if i == 0 else knobs.get("gap_ms", 0)) / 1000
            events.append(
                (
                    {
                        "type": "response.output_text.delta",
                        "item_id": item_id,
                        "output_index": 0,
                        "content_index": 0,
                        "delta": piece,
                        "logprobs": [],
                    },
                    wait,
                )
            )
        part = message["content"][0]
        events += [
            (
                {
                    "type": "response.output_text.done",
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "text": text,
                    "logprobs": [],
                },
                0,
            ),
            (
                {
                    "type": "response.content_part.done",
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "part": part,
                },
                0,
            ),
            ({"type": "response.output_item.done", "output_index": 0, "item": message}, 0),
            ({"type": "response.completed", "response": final}, 0),
        ]
        if knobs.get("fail_stream"):
            error = {"code": "server_error", "message": "The fake failed the response."}
            failed = {**final, "status": "failed", "completed_at": None, "error": error}
            events[-1] = ({"type": "response.failed", "response": failed}, 0)
        frames = []
        for seq, (event, wait) in enumerate(events):
            event = {**event, "sequence_number": seq}
            frames.append((f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode(), event["type"], wait))

        def before(label: str) -> None:
            if label == "response.completed":
                self.fake.keep(final, items)

        self._send_stream(frames, knobs, {"x-request-id": "req_" + os.urandom(6).hex()}, before)

    def _send_stream(
        self,
        frames: list[tuple[bytes, str, float]],
        knobs: dict[str, Any],
        headers: dict[str, str] | None = None,
        before: Any = None,
    ) -> None:
        """Write (data, label, wait) frames as HTTP chunks, as the cut_after/end_after knobs allow.

        Each label goes to ``fake.sent`` once its frame is written; ``before(label)`` runs just before.
        A client that goes away is counted in ``fake.disconnects``.
        """
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        cut_after = knobs.get("cut_after")
        end_after = knobs.get("end_after")
        try:
            for n, (data, label, wait) in enumerate(frames):
                if cut_after is not None and n >= int(cut_after):
                    # An abrupt end: no chunked terminator, the socket just goes away.
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if end_after is not None and n >= int(end_after):
                    break
                if wait:
                    time.sleep(wait)
                if before is not None:
                    before(label)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                self.fake.sent.append(label)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            with self.fake.lock:
                self.fake.disconnects += 1
            self.fake.disconnected.set()
            self.close_connection = True

    # ------------------------------------------------------------- chat completions
    def _chat(self, body: dict) -> None:
        knobs = self._knobs(body)
        if self._fault(knobs):
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(400, "messages must be a non-empty array", param="messages")
        answer = chat_answer(body, knobs)
        if body.get("stream"):
            return self._chat_stream(body, answer, knobs)
        message: dict[str, Any] = {"role": "assistant", "content": answer["content"]}
        if answer["tool_calls"]:
            message["tool_calls"] = answer["tool_calls"]
        if answer["reasoning"]:
            message["reasoning_content"] = answer["reasoning"]
        self._send_json(
            200,
            {
                "id": new_id("chatcmpl"),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": answer["finish_reason"]}],
                "usage": answer["usage"],
            },
        )

    def _chat_stream(self, body: dict, answer: dict, knobs: dict[str, Any]) -> None:
        cid = new_id("chatcmpl")
        base = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": body.get("model")}

        def chunk(delta: dict | None, finish: str | None = None, **extra: Any) -> dict:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            return {**base, "choices": choices, **extra}

        chunks: list[tuple[dict, float]] = [(chunk({"role": "assistant", "content": ""}), 0)]
        if answer["reasoning"]:
            chunks.append((chunk({"reasoning_content": answer["reasoning"]}), 0))
        words = (answer["content"] or "").split(" ") if answer["content"] else []
        for i, word in enumerate(words):
            wait = float(knobs.get("first_ms", 0) if i == 0 else knobs.get("gap_ms", 0)) / 1000
            chunks.append((chunk({"content": word if i == 0 else " " + word}), wait))
        for index, call in enumerate(answer["tool_calls"]):
            args = call["function"]["arguments"]
            half = len(args) // 2
            # A tool call arrives in pieces: id and name first, then the arguments split across chunks.
            first = {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            chunks.append((chunk({"tool_calls": [first]}), 0))
            for piece in (args[:half], args[half:]):
                chunks.append((chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}), 0))
        chunks.append((chunk({}, answer["finish_reason"]), 0))
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append((chunk(None, usage=answer["usage"]), 0))
        frames = [(b"data: " + json.dumps(payload).encode() + b"\n\n", "chunk", wait) for payload, wait in chunks]
        self._send_stream([*frames, (b"data: [DONE]\n\n", "[DONE]", 0)], knobs)

    def do_GET(self) -> None:
        self._record(None)
        segments, query = self._route()
        if not self._authorised() or self._fault(dict(self.fake.knobs)):
            return
        if len(segments) == 2 and segments[0] == "responses":
            resp = self.fake.responses.get(segments[1])
            if resp is None:
                return self._error(404, f"Response with id '{segments[1]}' not found.")
            return self._send_json(200, resp)
        if len(segments) == 3 and segments[0] == "responses" and segments[2] == "input_items":
            items = self.fake.input_items.get(segments[1])
            if items is None:
                return self._error(404, f"Response with id '{segments[1]}' not found.")
            order = query.get("order", ["desc"])[0]
            limit = int(query.get("limit", ["20"])[0])
            ordered = list(reversed(items)) if order == "desc" else list(items)
            after = query.get("after", [None])[0]
            if after:
                ids = [i["id"] for i in ordered]
                ordered = ordered[ids.index(after) + 1 :] if after in ids else []
            page = ordered[:limit]
            return self._send_json(
                200,
                {
                    "object": "list",
                    "data": page,
                    "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None,
                    "has_more": len(ordered) > limit,
                },
            )
        if segments == ["models"]:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.fake.models]
            return self._send_json(200, {"object": "list", "data": data})
        self._error(404, "Unknown path")

    def do_DELETE(self) -> None:
        self._record(None)
        segments, _ = self._route()
        if not self._authorised() or self._fault(dict(self.fake.knobs)):
            return
        if len(segments) == 2 and segments[0] == "responses":
            with self.fake.lock:
                found = self.fake.responses.pop(segments[1], None)
                self.fake.input_items.pop(segments[1], None)
            if found is None:
                return self._error(404, f"Response with id '{segments[1]}' not found.")
            return self._send_json(200, {"id": segments[1], "object": "response", "deleted": True})
        self._error(404, "Unknown path")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18000)
    args = parser.parse_args()
    fake = FakeProvider(port=args.port)
    print(f"fake provider on {fake.url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        fake.server.serve_forever()


if __name__ == "__main__":
    main()

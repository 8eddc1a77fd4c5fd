"""Chat Completions chunks -> the Responses API event sequence, item by item, numbered from 0."""

from __future__ import annotations

import copy
from typing import Any

from .. import sse
from . import response as build
from . import tools as client
from .request import custom_input, tool_names


class StreamTranslator:
    """Turns chunks into events as they come.

    A text or reasoning item is closed when the next item opens. Function calls stay open until the chunk
    stream ends: Chat Completions keys tool-call pieces by ``index``, so a provider may interleave the
    arguments of parallel calls, and each call's ``done`` events must carry its whole arguments (clients
    such as the AI SDK run the call from them). ``response`` is the skeleton (``status: in_progress``,
    ids minted); it becomes the final object.
    """

    def __init__(self, response: dict, names: dict | None = None):
        self.response = response
        # Chat Completions names of tools that are not plain functions -> (namespace, name, kind): given, or
        # from the tools the response echoes.
        self._names = tool_names(response.get("tools")) if names is None else names
        self.seq = 0
        self.finish_reason: str | None = None
        self.usage: Any = None
        self._open: dict | None = None  # the text or reasoning item being streamed: {"kind", "index", "item", "text"}
        self._calls: dict[int, dict] = {}  # chat tool-call index -> its open entry, as above

    def event(self, payload: dict) -> sse.Event:
        """``payload`` numbered as the next event of this stream."""
        payload["sequence_number"] = self.seq
        self.seq += 1
        return sse.Event.of(payload)

    def start(self) -> list[sse.Event]:
        snapshot = copy.deepcopy(self.response)
        return [
            self.event({"type": "response.created", "response": snapshot}),
            self.event({"type": "response.in_progress", "response": snapshot}),
        ]

    # ------------------------------------------------------------------ items
    def _open_item(self, kind: str, item: dict) -> tuple[dict, list[sse.Event]]:
        out = self._close(self._open)
        self._open = None
        if kind == "client":
            # Announced (and placed in the output) when whole: its item's required fields (a shell call's
            # commands, a patch's operation) come out of the complete arguments.
            return {"kind": kind, "index": None, "item": item, "text": [], "opened": len(self._calls)}, out
        index = len(self.response["output"])
        self.response["output"].append(item)
        entry = {"kind": kind, "index": index, "item": item, "text": []}
        added = copy.deepcopy(item)
        if kind == "message" or kind == "reasoning":
            added["content"] = []
        out.append(self.event({"type": "response.output_item.added", "output_index": index, "item": added}))
        if kind == "message":
            out.append(
                self.event(
                    {
                        "type": "response.content_part.added",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                    }
                )
            )
        return entry, out

    def _close(self, current: dict | None, status: str = "completed") -> list[sse.Event]:
        if current is None:
            return []
        item, index, kind = current["item"], current["index"], current["kind"]
        item["status"] = status
        out = []
        if kind == "message":
            text = "".join(current["text"])
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item["content"] = [part]
            base = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(self.event({"type": "response.output_text.done", **base, "text": text, "logprobs": []}))
            out.append(self.event({"type": "response.content_part.done", **base, "part": part}))
        elif kind == "reasoning":
            text = "".join(current["text"])
            item["content"] = [{"type": "reasoning_text", "text": text}]
            out.append(
                self.event(
                    {
                        "type": "response.reasoning_text.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "content_index": 0,
                        "text": text,
                    }
                )
            )
        elif kind == "custom_tool_call":
            item.pop("status", None)  # custom tool calls have none
            item["input"] = custom_input(current["arguments"])
            base = {"item_id": item["id"], "output_index": index}
            out.append(self.event({"type": "response.custom_tool_call_input.delta", **base, "delta": item["input"]}))
            out.append(self.event({"type": "response.custom_tool_call_input.done", **base, "input": item["input"]}))
        elif kind == "client":
            # Its place in the output is taken now, when it is announced: items announced before it have theirs.
            index = current["index"] = len(self.response["output"])
            self.response["output"].append(item)
            made = client.call_item(item, client.CLIENT_TOOLS[current["tool"]], current["arguments"])
            if not made:
                item["arguments"] = current["arguments"]
            added = {**copy.deepcopy(item), "status": "in_progress"}
            if not made:
                added["arguments"] = ""
            out.append(self.event({"type": "response.output_item.added", "output_index": index, "item": added}))
            if item["type"] == "shell_call":
                for n, command in enumerate(item["action"]["commands"]):
                    at = {"output_index": index, "command_index": n}
                    out.append(self.event({"type": "response.shell_call_command.added", **at, "command": ""}))
                    out.append(self.event({"type": "response.shell_call_command.delta", **at, "delta": command}))
                    out.append(self.event({"type": "response.shell_call_command.done", **at, "command": command}))
            elif not made:
                base = {"item_id": item["id"], "output_index": index}
                out.append(
                    self.event({"type": "response.function_call_arguments.delta", **base, "delta": item["arguments"]})
                )
                out.append(
                    self.event(
                        {
                            "type": "response.function_call_arguments.done",
                            **base,
                            "name": item["name"],
                            "arguments": item["arguments"],
                        }
                    )
                )
        elif kind == "function_call":
            out.append(
                self.event(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "name": item["name"],
                        "arguments": item["arguments"],
                    }
                )
            )
        out.append(self.event({"type": "response.output_item.done", "output_index": index, "item": item}))
        return out

    # ------------------------------------------------------------------ chunks
    def feed(self, chunk: dict) -> list[sse.Event]:
        out: list[sse.Event] = []
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get("model"):
            self.response["model"] = chunk["model"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = build.reasoning_text(delta)
            if reasoning:
                out += self._text("reasoning", reasoning)
            if isinstance(delta.get("content"), str) and delta["content"]:
                out += self._text("message", delta["content"])
            for call in delta.get("tool_calls") or []:
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _text(self, kind: str, text: str) -> list[sse.Event]:
        out = []
        if self._open is None or self._open["kind"] != kind:
            prefix = "msg" if kind == "message" else "rs"
            item = (
                build.message_item(build.new_id(prefix), None, None, "in_progress")
                if kind == "message"
                else build.reasoning_item(build.new_id(prefix), "")
            )
            item["status"] = "in_progress"
            self._open, opened = self._open_item(kind, item)
            out += opened
        current = self._open
        current["text"].append(text)
        kind_event = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        payload = {
            "type": kind_event,
            "item_id": current["item"]["id"],
            "output_index": current["index"],
            "content_index": 0,
            "delta": text,
        }
        if kind == "message":
            payload["logprobs"] = []
        out.append(self.event(payload))
        return out

    def _tool_call(self, call: dict) -> list[sse.Event]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        out: list[sse.Event] = []
        entry = self._calls.get(index)
        if entry is None:
            name = function.get("name") or ""
            item = build.function_call_item(
                build.new_id("fc"), call.get("id") or build.new_id("call"), name, "", status="in_progress"
            )
            tool = self._names.get(name, (None, None, None))[2]
            if tool in client.CLIENT_TOOLS:
                entry, opened = self._open_item("client", item)
                entry["tool"] = tool
            else:
                build.name_as_called(item, self._names)
                entry, opened = self._open_item(item["type"], item)
            entry["arguments"] = ""
            self._calls[index] = entry
            out += opened
        elif function.get("name") and not entry["item"].get("name") and entry["kind"] == "function_call":
            # A name after the call was announced: only a namespaced function's can still be given (a custom
            # or client tool's call would have been announced as another item).
            entry["item"]["name"] = function["name"]
            found = self._names.get(function["name"])
            if found is not None and found[2] == "function":
                build.name_as_called(entry["item"], self._names)
        piece = function.get("arguments") or ""
        if piece and entry["kind"] in ("custom_tool_call", "client"):
            entry["arguments"] += piece  # the input comes out of the whole object, at the end
        elif piece:
            item = entry["item"]
            item["arguments"] += piece
            out.append(
                self.event(
                    {
                        "type": "response.function_call_arguments.delta",
                        "item_id": item["id"],
                        "output_index": entry["index"],
                        "delta": piece,
                    }
                )
            )
        return out

    # ------------------------------------------------------------------ the end
    def _close_all(self, status: str) -> list[sse.Event]:
        """Close every item still open, in output order."""
        # Client tool calls last (they are placed when announced), in the order they opened.
        entries = [*self._calls.values(), *([self._open] if self._open else [])]
        open_items = sorted(entries, key=lambda e: (e["index"] is None, e["index"] or 0, e.get("opened", 0)))
        self._open, self._calls = None, {}
        return [event for entry in open_items for event in self._close(entry, status)]

    def complete(self) -> tuple[dict, list[sse.Event]]:
        """Close the open item and finish the Response; returns it and the events that remain to send."""
        status = "incomplete" if self.finish_reason in ("length", "content_filter") else "completed"
        out = self._close_all(status)
        final = build.finish(self.response, self.finish_reason, self.usage)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        out.append(self.event({"type": kind, "response": final}))
        return final, out

    def fail(self, code: str, message: str) -> tuple[dict, list[sse.Event]]:
        """The provider broke off: close what is open as incomplete and end with ``response.failed``."""
        out = self._close_all("incomplete")
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        self.response["usage"] = build.usage(self.usage) if self.usage else None
        out.append(self.event({"type": "response.failed", "response": self.response}))
        return self.response, out

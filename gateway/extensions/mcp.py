"""Remote MCP tools the gateway runs itself, for providers that do not (every emulated one, and native ones
whose catalogue entry does not say ``runs_mcp``).

Around the attempt stage: list each server's tools (``mcp_list_tools``; a later turn reuses the list its
context holds), offer the allowed ones to the model as functions, run each call the model makes against
its server (``mcp_call``), feed the result back and call the model again, until it answers, asks the client
for something (its own function call, or an ``mcp_approval_request``), or the calls reach ``max_tool_calls``
or ``mcp_max_calls`` (then the model is called once more with ``tool_choice: "none"``). A fallback to the
next target happens inside one model call, so a tool already run is never run again.

The client sees one Response, streamed as it happens: the model's events renumbered into it, its calls of
MCP tools as ``mcp_call`` items with their own events. Each model call is made streaming (whatever the
client asked) so that there is one way to read them; the last call's fields (model, usage summed) are the
Response's. The provider never keeps these inner calls; the gateway records the one Response.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from .. import mcp, sse
from ..call import Context, Turn
from ..compaction import since_last
from ..emulation import response as build
from ..errors import GatewayError, InvalidRequest, StoreUnavailable
from ..items import TurnInput
from ..reply import Reply, error_event
from ..routing import Target

_LIFECYCLE = frozenset(
    {"response.created", "response.in_progress", "response.queued", "response.completed", "response.incomplete"}
)
_DECLINED = "The user declined to run this tool."
# The fields of an inner call's request the gateway decides: the provider keeps nothing of these calls.
_INNER_DROPPED = ("previous_response_id", "conversation", "background", "max_tool_calls", "prompt")


class ListFailed(GatewayError):
    """424, as OpenAI answers when it cannot list an MCP server's tools."""

    status = 424
    type = "external_connector_error"
    code = "http_error"


class McpTools:
    def __init__(self, settings: Any):
        self.limits = mcp.Limits(
            mcp.HostPolicy.of(settings.mcp_hosts), settings.mcp_timeout, settings.mcp_max_result_bytes
        )
        self.max_calls = settings.mcp_max_calls

    def wants(self, ctx: Context, turn: Turn) -> bool:
        tools = turn.body.get("tools")
        return bool(tools) and any(isinstance(t, dict) and t.get("type") == "mcp" for t in tools)

    def around(
        self,
        ctx: Context,
        turn: Turn,
        targets: list[Target],
        run: Callable[[Turn], tuple[Reply, Target]],
        record: Callable[[Target], Callable[[dict], None]],
    ) -> tuple[Reply, Target]:
        if all(t.provider.native and t.provider.runs_mcp for t in targets):
            return run(turn)  # the providers run MCP themselves
        if turn.prev_id and turn.prev is None:
            # A previous response only a provider holds: its context is not the gateway's to send, and a
            # provider that does not run MCP must not be sent the server's credentials.
            raise InvalidRequest(
                f"Previous response with id '{turn.prev_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return _Loop(self, ctx, turn, run, record).start()


@dataclasses.dataclass
class _Server:
    label: str
    url: str
    headers: dict[str, str]
    allowed: Any  # allowed_tools as given
    approval: Any  # require_approval as given
    tools: dict[str, dict] = dataclasses.field(default_factory=dict)  # name -> tool, as listed
    session: mcp.Session | None = None

    def allows(self, tool: dict) -> bool:
        allowed = self.allowed
        if allowed is None:
            return True
        if isinstance(allowed, list):
            return tool["name"] in allowed
        names = allowed.get("tool_names")
        if names is not None and tool["name"] not in names:
            return False
        # read_only: only the tools the server marks as not changing anything.
        return not allowed.get("read_only") or bool((tool.get("annotations") or {}).get("readOnlyHint"))

    def needs_approval(self, name: str) -> bool:
        approval = self.approval
        if approval is None or approval == "always":  # OpenAI asks by default
            return True
        if approval == "never":
            return False
        never = (approval.get("never") or {}).get("tool_names") or []
        return name not in never


# The most MCP servers one request may name: each is listed before the model is called.
MAX_SERVERS = 8


def _servers(tools: list) -> dict[str, _Server]:
    servers: dict[str, _Server] = {}
    for position, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "mcp":
            continue
        param = f"tools[{position}]"
        label = tool.get("server_label")
        if not isinstance(label, str) or not label:
            raise InvalidRequest("An mcp tool needs a server_label.", param=f"{param}.server_label")
        if label in servers:
            raise InvalidRequest(f"Two mcp tools have the server_label '{label}'.", param=f"{param}.server_label")
        url = tool.get("server_url")
        if not isinstance(url, str) or not url:
            raise InvalidRequest(
                "This provider's MCP tools are run by the gateway, which needs a server_url "
                "(connector_id and tunnel_id are OpenAI's own).",
                param=f"{param}.server_url",
                code="unsupported_parameter",
            )
        try:
            mcp.check_url(url)
        except mcp.McpFailure as exc:
            raise InvalidRequest(exc.message[0].upper() + exc.message[1:] + ".", param=f"{param}.server_url") from None
        headers = tool.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise InvalidRequest("An mcp tool's headers must be an object of strings.", param=f"{param}.headers")
        headers = dict(headers)
        if isinstance(tool.get("authorization"), str) and tool["authorization"]:
            headers["Authorization"] = f"Bearer {tool['authorization']}"
        allowed, approval = tool.get("allowed_tools"), tool.get("require_approval")
        if allowed is not None and not isinstance(allowed, list | dict):
            raise InvalidRequest("allowed_tools must be a list of names or a filter.", param=f"{param}.allowed_tools")
        if approval is not None and approval not in ("always", "never") and not isinstance(approval, dict):
            raise InvalidRequest(
                "require_approval must be always, never or a filter.", param=f"{param}.require_approval"
            )
        servers[label] = _Server(label, url, headers, allowed, approval)
        if len(servers) > MAX_SERVERS:
            raise InvalidRequest(f"At most {MAX_SERVERS} MCP servers may be named in one request.", param=param)
    return servers


class _Out:
    """The client's event stream: numbered from 0, whatever the model's streams were numbered."""

    def __init__(self) -> None:
        self.seq = 0

    def event(self, payload: dict) -> sse.Event:
        payload["sequence_number"] = self.seq
        self.seq += 1
        return sse.Event.of(payload)


class _Loop:
    def __init__(self, ext: McpTools, ctx: Context, turn: Turn, run: Callable, record: Callable):
        self.ext, self.ctx, self.turn, self.run, self.record = ext, ctx, turn, run, record
        body = turn.body
        self.servers = _servers(body["tools"])
        self.stream = bool(body.get("stream")) or turn.keeper is not None
        limit = body.get("max_tool_calls")
        self.limit = min(ext.max_calls, limit) if isinstance(limit, int) and limit >= 0 else ext.max_calls
        self.calls = 0
        self.output: list[dict] = []  # the Response's items so far
        self.usage: dict | None = None
        self.names: dict[str, tuple[str, str]] = {}  # function name the model sees -> (server label, tool name)
        self.reply: Reply | None = None  # the model call being read (its abort is the client's)
        self.context = self._context()
        self.response_id = turn.keeper.response_id if turn.keeper is not None else build.new_id("resp")
        self.skeleton = build.skeleton(body, self.response_id, int(time.time()), turn.prev_id)
        if turn.prompt is not None:  # a template the gateway expanded: the Response names it
            self.skeleton["prompt"] = turn.prompt

    # -- the context ---------------------------------------------------------------------------------------

    def _context(self) -> list[dict]:
        """The conversation before this turn, then this turn's items: the gateway sends it whole."""
        turn, svc = self.turn, self.ctx.svc
        if turn.history is not None:
            history = turn.history
        elif turn.prev is not None:
            held = turn.source.context(turn.prev.id) if turn.source is not None else None
            history = held if held is not None else svc.store.chain_items(self.ctx.caller.tenant, turn.prev.id)
            history = since_last(history)
        else:
            history = []
        turn.input.check_resolved()
        return [*history, *turn.input.items]

    def _model_items(self) -> list[dict]:
        """The context and the output so far as the model is sent them: MCP items as function calls and
        their outputs, listings and pending approvals left out.
        """
        items = [*self.context, *self.output]
        answered: dict[str, dict] = {}
        for item in items:
            kind = item.get("type")
            if kind == "mcp_call" and item.get("approval_request_id"):
                answered[item["approval_request_id"]] = item
            elif kind == "mcp_approval_response" and not item.get("approve"):
                answered.setdefault(item.get("approval_request_id"), {"output": _DECLINED})
        out: list[dict] = []
        for item in items:
            kind = item.get("type")
            if kind == "mcp_approval_request":
                result = answered.get(item.get("id"))
                if result is not None:
                    out.append(self._function_call(item["id"], item))
                    out.append(_function_output(item["id"], result))
            elif kind == "mcp_call":
                if not item.get("approval_request_id"):
                    out.append(self._function_call(item["id"], item))
                    out.append(_function_output(item["id"], item))
            elif kind not in ("mcp_list_tools", "mcp_approval_response"):
                out.append({k: v for k, v in item.items() if k != "id"})
        return out

    def _function_call(self, call_id: str, item: dict) -> dict:
        name = next(
            (
                fn
                for fn, (label, tool) in self.names.items()
                if label == item.get("server_label") and tool == item.get("name")
            ),
            _function_name(str(item.get("server_label")), str(item.get("name"))),
        )
        return {"type": "function_call", "call_id": call_id, "name": name, "arguments": item.get("arguments") or "{}"}

    # -- the servers ---------------------------------------------------------------------------------------

    def _session(self, server: _Server) -> mcp.Session:
        if server.session is None:
            server.session = mcp.Session(server.url, server.headers, self.ext.limits)
        return server.session

    def _close(self) -> None:
        for server in self.servers.values():
            if server.session is not None:
                server.session.close()
                server.session = None

    def _list(self) -> None:
        """Each server's tools: from the context's latest listing of it, else listed now (an output item)."""
        listed = {
            item.get("server_label"): item
            for item in self.context
            if item.get("type") == "mcp_list_tools" and not item.get("error") and isinstance(item.get("tools"), list)
        }
        for server in self.servers.values():
            item = listed.get(server.label)
            if item is not None:
                tools = [t for t in item["tools"] if isinstance(t, dict) and isinstance(t.get("name"), str)]
            else:
                try:
                    found = self._session(server).list_tools()
                except mcp.McpFailure as exc:
                    raise ListFailed(
                        f"Error retrieving tool list from MCP server: '{server.label}'. {exc.message[0].upper()}"
                        f"{exc.message[1:]}.",
                        param="tools",
                    ) from None
                # description and annotations only when the server gave them: clients read them as optional,
                # not as nullable (the AI SDK refuses a null).
                tools = [
                    {
                        "name": t["name"],
                        "input_schema": t.get("inputSchema") or {"type": "object", "properties": {}},
                        **{k: t[k] for k in ("description", "annotations") if isinstance(t.get(k), str | dict)},
                    }
                    for t in found
                ]
                tools = [t for t in tools if server.allows(t)]
                self.output.append(
                    {
                        "id": build.new_id("mcpl"),
                        "type": "mcp_list_tools",
                        "server_label": server.label,
                        "tools": tools,
                    }
                )
            server.tools = {t["name"]: t for t in tools if server.allows(t)}
        # The client's own tools keep their names: an MCP tool of the same name is offered under another.
        taken = {t.get("name") for t in self.turn.body["tools"] if isinstance(t, dict) and t.get("type") != "mcp"}
        for server in self.servers.values():
            for name in server.tools:
                fn = _function_name("", name)
                if fn in taken:
                    fn = _function_name(server.label, name)
                serial = 1
                while fn in taken:
                    serial += 1
                    fn = _function_name(server.label, name)[:60] + f"_{serial}"
                taken.add(fn)
                self.names[fn] = (server.label, name)

    def _run(self, label: str, name: str, arguments: str) -> dict:
        """One call against its server: the ``mcp_call`` fields it ends with (output, or error)."""
        server = self.servers.get(label)
        self.calls += 1
        try:
            args = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError:
            args = None
        if not isinstance(args, dict):
            error = {"type": "mcp_protocol_error", "code": -32602, "message": "The arguments are not a JSON object."}
            return {"output": None, "error": error, "status": "failed"}
        if server is None or name not in server.tools:
            error = {"type": "mcp_protocol_error", "code": -32602, "message": f"Unknown tool: {name}"}
            return {"output": None, "error": error, "status": "failed"}
        try:
            result = self._session(server).call_tool(name, args)
        except mcp.McpFailure as exc:
            return {"output": None, "error": exc.error, "status": "failed"}
        if result.get("isError"):
            error = {"type": "mcp_tool_execution_error", "content": result.get("content")}
            return {"output": None, "error": error, "status": "failed"}
        return {"output": mcp.text_of(result), "error": None, "status": "completed"}

    # -- the model -----------------------------------------------------------------------------------------

    def _call_model(self) -> tuple[Reply, Target]:
        turn, body = self.turn, self.turn.body
        tools: list = []
        for tool in body["tools"]:
            if isinstance(tool, dict) and tool.get("type") == "mcp":
                continue
            tools.append(tool)
        for fn, (label, name) in self.names.items():
            listed = self.servers[label].tools[name]
            function = {"type": "function", "name": fn, "parameters": listed.get("input_schema"), "strict": False}
            if listed.get("description"):
                function["description"] = listed["description"]
            tools.append(function)
        inner = {k: v for k, v in body.items() if k not in _INNER_DROPPED}
        inner.update(tools=tools, stream=True, store=False)
        if self.calls >= self.limit:
            inner["tool_choice"] = "none"
        elif isinstance(body.get("tool_choice"), dict) and body["tool_choice"].get("type") == "mcp":
            inner["tool_choice"] = self._choice(body["tool_choice"]) if not self.calls else "auto"
        if not tools:
            inner.pop("tools")
            inner.pop("tool_choice", None)
        items = self._model_items()
        inner["input"] = items
        inner_turn = dataclasses.replace(
            turn,
            body=inner,
            prev_id=None,
            prev=None,
            keep=False,
            input=TurnInput(items, items),
            conversation=None,
            history=None,
            sinks=(),
            keeper=None,
            prompt=None,
            charge=False,  # the Response is charged once, in ``record``, with the usage of every call summed
        )
        reply, target = self.run(inner_turn)
        self.reply = reply
        return reply, target

    def _choice(self, choice: dict) -> Any:
        label, name = choice.get("server_label"), choice.get("name")
        for fn, (lab, tool) in self.names.items():
            if lab == label and (name is None or tool == name):
                return {"type": "function", "name": fn} if name is not None else "required"
        return "auto"

    # -- the Response --------------------------------------------------------------------------------------

    def start(self) -> tuple[Reply, Target]:
        try:
            self._list()
            self._approved()
            reply, target = self._call_model()
        except BaseException:
            self._close()
            raise
        if reply.status >= 400 or reply.stream is None:
            self._close()
            return reply, target
        events = self._events(reply, target)
        headers = dict(reply.headers)  # the first model call's (rate limits, the target that answered)
        if self.stream:
            return Reply(200, headers, stream=events, abort=self._abort, primed=False), target
        last = None
        for event in events:
            last = event
        payload = last.json() if last is not None else None
        if payload is None or payload.get("type") == "error":
            raise StoreUnavailable()  # the one error event the loop ends with: the record could not be written
        final = payload["response"]
        if self.failure is not None and final.get("status") == "failed":
            raise self.failure
        return Reply(200, headers, orjson.dumps(final), data=final), target

    failure: GatewayError | None = None  # a later model call's, for a JSON answer

    def _abort(self) -> None:
        if self.reply is not None and self.reply.abort is not None:
            self.reply.abort()

    def _approved(self) -> None:
        """The calls this turn's ``mcp_approval_response`` items approve, run before the model is called."""
        requests = {item.get("id"): item for item in self.context if item.get("type") == "mcp_approval_request"}
        done = {item.get("approval_request_id") for item in self.context if item.get("type") == "mcp_call"}
        for item in self.turn.input.items:
            if item.get("type") != "mcp_approval_response" or not item.get("approve"):
                continue
            asked = requests.get(item.get("approval_request_id"))
            if asked is None or asked["id"] in done or asked.get("server_label") not in self.servers:
                continue
            done.add(asked["id"])
            call = {
                "id": build.new_id("mcp"),
                "type": "mcp_call",
                "server_label": asked["server_label"],
                "name": asked["name"],
                "arguments": asked.get("arguments") or "{}",
                "approval_request_id": asked["id"],
                "output": None,
                "error": None,
                "status": "calling",
            }
            call.update(self._run(call["server_label"], call["name"], call["arguments"]))
            self.output.append(call)

    def _events(self, reply: Reply, target: Target) -> Iterator[sse.Event]:
        try:
            yield from self._run_loop(reply, target)
        finally:  # after the terminal event, or when the client leaves: the sessions end with the response
            self._close()

    def _run_loop(self, reply: Reply, target: Target) -> Iterator[sse.Event]:
        out = _Out()
        final = None
        opening = copy.deepcopy(self.skeleton)
        yield out.event({"type": "response.created", "response": opening})
        yield out.event({"type": "response.in_progress", "response": opening})
        for index, item in enumerate(list(self.output)):  # the listings, the calls approved before
            yield from self._made_events(out, index, item)
        while True:
            outcome = yield from self._relay(out, reply)
            if outcome["final"] is not None:
                final = outcome["final"]
                break
            if not outcome["again"]:
                break
            try:
                reply, target = self._call_model()
            except StoreUnavailable:
                raise
            except GatewayError as exc:  # the tools already ran: the response ends failed, and is kept
                self.failure = exc
                final = self._final("failed", {"code": "server_error", "message": exc.message})
                break
            if reply.status >= 400 or reply.stream is None:
                message = _message_of(reply)
                self.failure = GatewayError(message, status=reply.status, code="upstream_error")
                final = self._final("failed", {"code": "server_error", "message": message})
                break
        if final is None:
            final = self._final(outcome["status"], None, outcome.get("incomplete"))
        try:
            self.record(target)(final)
        except StoreUnavailable as exc:
            if final["status"] != "failed":
                yield error_event(out.seq, exc)
                return
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
            final["status"], "response.failed"
        )
        yield out.event({"type": kind, "response": final})

    def _final(self, status: str, error: dict | None, incomplete: Any = None) -> dict:
        final = copy.deepcopy(self.skeleton)
        final.update(status=status, output=self.output, usage=self.usage, error=error, incomplete_details=incomplete)
        if status == "completed":
            final["completed_at"] = int(time.time())
        return final

    def _made_events(self, out: _Out, index: int, item: dict) -> Iterator[sse.Event]:
        """The events of an item made before the model was called: a listing, or an approved call."""
        at = {"output_index": index, "item_id": item["id"]}
        if item["type"] == "mcp_list_tools":
            yield out.event(
                {"type": "response.output_item.added", "output_index": index, "item": {**item, "tools": []}}
            )
            yield out.event({"type": "response.mcp_list_tools.in_progress", **at})
            yield out.event({"type": "response.mcp_list_tools.completed", **at})
        else:
            opened = {**item, "output": None, "error": None, "status": "in_progress"}
            yield out.event({"type": "response.output_item.added", "output_index": index, "item": opened})
            yield out.event({"type": "response.mcp_call_arguments.done", **at, "arguments": item["arguments"]})
            yield out.event({"type": "response.mcp_call.in_progress", **at})
            done = "response.mcp_call.completed" if item["status"] == "completed" else "response.mcp_call.failed"
            yield out.event({"type": done, **at})
        yield out.event({"type": "response.output_item.done", "output_index": index, "item": item})

    def _relay(self, out: _Out, reply: Reply) -> Iterator[sse.Event]:
        try:
            return (yield from self._relay_one(out, reply))
        finally:
            close = getattr(reply.stream, "close", None)
            if close is not None:
                close()  # a model stream left early (a failure) ends here, not at garbage collection

    def _relay_one(self, out: _Out, reply: Reply) -> Iterator[sse.Event]:
        """One model call's events, renumbered into the client's stream; its MCP calls run once it ends.

        Returns ``{"final": a failed Response or None, "again": call the model again, "status", ...}``.
        """
        places: dict[int, int | None] = {}  # the model's output_index -> the Response's (None: left out)
        calls: dict[int, dict] = {}  # the model's output_index -> the mcp_call or approval request it became
        queued: list[tuple[int, dict]] = []
        asks = False  # the model called a tool of the client's, or a call needs approval
        inner_final = None
        assert reply.stream is not None
        for event in reply.stream:
            payload = event.json()
            if payload is None:
                continue
            kind = payload.get("type")
            if kind in _LIFECYCLE:
                if kind in ("response.completed", "response.incomplete"):
                    inner_final = payload.get("response")
                continue
            if kind == "response.failed":
                failed = payload.get("response") or {}
                self._add_usage(failed.get("usage"))
                error = failed.get("error") or {"code": "server_error", "message": "The provider failed."}
                return {"final": self._final("failed", error), "again": False}
            if kind == "error":
                message = (payload.get("error") or payload).get("message") or "The provider failed."
                return {"final": self._final("failed", {"code": "server_error", "message": message}), "again": False}
            at = payload.get("output_index")
            if not isinstance(at, int):
                yield out.event(dict(payload))
                continue
            if kind == "response.output_item.added":
                item = payload.get("item") or {}
                mapped = self.names.get(item.get("name")) if item.get("type") == "function_call" else None
                if mapped is None:
                    asks = asks or item.get("type") not in ("message", "reasoning")
                    places[at] = len(self.output)
                    self.output.append(item)
                    yield out.event({**payload, "output_index": places[at]})
                    continue
                label, name = mapped
                if self.servers[label].needs_approval(name):
                    asks = True
                    made = {
                        "id": build.new_id("mcpr"),
                        "type": "mcp_approval_request",
                        "server_label": label,
                        "name": name,
                        "arguments": "",
                    }
                elif self.calls + len(queued) >= self.limit:
                    places[at] = None  # past the cap: the call is not made, and the model never sees it
                    continue
                else:
                    made = {
                        "id": build.new_id("mcp"),
                        "type": "mcp_call",
                        "server_label": label,
                        "name": name,
                        "arguments": "",
                        "output": None,
                        "error": None,
                        "status": "in_progress",
                    }
                    queued.append((at, made))
                places[at] = len(self.output)
                calls[at] = made
                self.output.append(made)
                yield out.event({"type": kind, "output_index": places[at], "item": copy.deepcopy(made)})
                continue
            place = places.get(at)
            if place is None:
                continue
            made = calls.get(at)
            if made is None:
                if kind == "response.output_item.done":
                    self.output[place] = payload.get("item") or self.output[place]
                yield out.event({**payload, "output_index": place})
                continue
            ids = {"output_index": place, "item_id": made["id"]}
            if kind == "response.output_item.done":
                made["arguments"] = (payload.get("item") or {}).get("arguments") or made["arguments"] or "{}"
                if made["type"] == "mcp_approval_request":
                    yield out.event({"type": kind, "output_index": place, "item": made})
                else:
                    yield out.event({"type": "response.mcp_call_arguments.done", **ids, "arguments": made["arguments"]})
            elif made["type"] == "mcp_call" and kind == "response.function_call_arguments.delta":
                yield out.event({"type": "response.mcp_call_arguments.delta", **ids, "delta": payload.get("delta", "")})
        if inner_final is None:
            return {
                "final": self._final(
                    "failed", {"code": "server_error", "message": "The provider's stream ended early."}
                ),
                "again": False,
            }
        self._add_usage(inner_final.get("usage"))
        self.skeleton["model"] = inner_final.get("model") or self.skeleton["model"]
        for at, made in queued:
            place = places[at]
            ids = {"output_index": place, "item_id": made["id"]}
            yield out.event({"type": "response.mcp_call.in_progress", **ids})
            made.update(self._run(made["server_label"], made["name"], made["arguments"]))
            done = "response.mcp_call.completed" if made["status"] == "completed" else "response.mcp_call.failed"
            yield out.event({"type": done, **ids})
            yield out.event({"type": "response.output_item.done", "output_index": place, "item": made})
        status = inner_final.get("status") or "completed"
        again = bool(queued) and not asks and status == "completed"
        return {"final": None, "again": again, "status": status, "incomplete": inner_final.get("incomplete_details")}

    def _add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if self.usage is None:
            self.usage = copy.deepcopy(usage)
            return
        total = self.usage
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            total[key] = (total.get(key) or 0) + (usage.get(key) or 0)
        for group in ("input_tokens_details", "output_tokens_details"):
            for key, value in (usage.get(group) or {}).items():
                if isinstance(value, int):
                    total.setdefault(group, {})[key] = (total.get(group, {}).get(key) or 0) + value


def _function_output(call_id: str, item: dict) -> dict:
    output = item.get("output")
    if output is None:
        error = item.get("error")
        output = f"Error: {orjson.dumps(error).decode()}" if error else ""
    return {"type": "function_call_output", "call_id": call_id, "output": output}


def _function_name(label: str, name: str) -> str:
    """A Chat Completions function name for a server's tool: letters, digits, ``_`` and ``-``, 64 at most."""
    joined = f"{label}__{name}" if label else name
    return re.sub(r"[^A-Za-z0-9_-]", "_", joined)[:64]


def _message_of(reply: Reply) -> str:
    try:
        data = reply.data if reply.data is not None else orjson.loads(reply.body or b"{}")
    except orjson.JSONDecodeError:
        data = {}
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return f"The provider answered HTTP {reply.status}."

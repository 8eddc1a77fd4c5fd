"""Remote MCP tools the gateway runs itself, against the official ``mcp`` SDK's own server on 127.0.0.1.

The model is tests/scripted_model.py, as an emulated provider (``scriptchat``) and a native one that does not
run MCP (``scriptnative``): it calls each tool it is offered once, then answers with the results. The server
(tests/mcp_server.py) has a fast tool, a slow one, a failing one and one that answers megabytes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest
import requests

from tests import strict_types
from tests.conftest import KEY, ROOT, Gunicorn, scripted_env
from tests.services import free_port

PROVIDERS = ["scriptchat", "scriptnative"]


class McpServer:
    def __init__(self, transport: str = "streamable-http", *extra: str):
        self.port = free_port()
        path = "/sse" if transport == "sse" else "/mcp"
        self.url = f"http://127.0.0.1:{self.port}{path}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp_server", str(self.port), transport, *extra],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the MCP server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Hanging:
    """A server that accepts connections and never answers; ``drip``: answers one byte every half second."""

    def __init__(self, drip: bool = False) -> None:
        self.drip = drip
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/mcp"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.drip:
                threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            for _ in range(200):
                conn.sendall(b" ")
                time.sleep(0.5)
        except OSError:
            return

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def mcp_server():
    server = McpServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mcp_gateway(scripted, tmp_path_factory):
    server = Gunicorn(
        {
            **scripted_env(scripted, tmp_path_factory.mktemp("mcp") / "gateway.sqlite3"),
            "GATEWAY_MCP_HOSTS": "127.0.0.1",
            "GATEWAY_MCP_TIMEOUT": "3",
            "GATEWAY_MCP_MAX_RESULT_BYTES": "1000000",
        }
    )
    yield server
    server.stop()


_CLIENTS: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()  # their pooled sockets now, not at garbage collection


def _client(gateway, provider: str) -> openai.OpenAI:
    client = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=KEY,
        max_retries=0,
        default_headers={"x-portkey-provider": provider},
        _strict_response_validation=True,
    )
    _CLIENTS.append(client)
    return client


def _mcp(server_url: str, **extra) -> dict:
    return {"type": "mcp", "server_label": "tests", "server_url": server_url, "require_approval": "never", **extra}


def _types(response) -> list[str]:
    return [item.type for item in response.output]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_gateway_lists_calls_and_answers_with_the_result(mcp_gateway, mcp_server, provider):
    client = _client(mcp_gateway, provider)
    tool = _mcp(mcp_server.url, allowed_tools=["add"])
    first = client.responses.create(model="scripted-1", input="add them", tools=[tool])
    assert first.status == "completed"
    assert _types(first) == ["mcp_list_tools", "mcp_call", "message"]
    listing, call, message = first.output
    assert [t.name for t in listing.tools] == ["add"]
    assert listing.tools[0].input_schema["required"] == ["a", "b"]
    assert (call.name, call.server_label, json.loads(call.arguments)) == ("add", "tests", {"a": 3, "b": 3})
    assert (call.output, call.error, call.status) == ("6", None, "completed")
    assert message.content[0].text == "Answer to 'add them': 6"
    assert first.usage.total_tokens == 60  # two model calls of 30 tokens each, summed
    assert first.tools[0].type == "mcp"

    # The next turn reuses the stored listing (no new mcp_list_tools) and sees the earlier call.
    second = client.responses.create(model="scripted-1", input="again", tools=[tool], previous_response_id=first.id)
    assert _types(second) == ["mcp_call", "message"]
    assert second.output[-1].content[0].text == "Answer to 'again': 6"
    third = client.responses.create(
        model="scripted-1", input="and once more", tools=[tool], previous_response_id=second.id
    )
    assert _types(third) == ["mcp_call", "message"]
    stored = client.responses.retrieve(third.id)
    assert stored.output[0].output == "6"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_streamed_calls_have_their_events_in_order(mcp_gateway, mcp_server, provider):
    response = requests.post(
        mcp_gateway.url + "/v1/responses",
        headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": provider},
        json={
            "model": "scripted-1",
            "input": "add",
            "stream": True,
            "tools": [_mcp(mcp_server.url, allowed_tools=["add"])],
        },
        timeout=30,
    )
    assert response.status_code == 200
    events = strict_types.sse_events(response.text)
    final = strict_types.stream(events)
    kinds = [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for wanted in (
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.output_text.delta",
    ):
        assert wanted in kinds, wanted
    assert kinds.index("response.mcp_call.completed") < kinds.index("response.output_text.delta")
    assert [i["type"] for i in final["output"]] == ["mcp_list_tools", "mcp_call", "message"]
    assert final["output"][1]["output"] == "6"
    indexes = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    assert indexes == [0, 1, 2]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_approval_ends_the_response_and_the_next_turn_runs_the_call(mcp_gateway, mcp_server, provider):
    client = _client(mcp_gateway, provider)
    tool = _mcp(mcp_server.url, allowed_tools=["add"], require_approval="always")
    first = client.responses.create(model="scripted-1", input="add please", tools=[tool])
    assert _types(first) == ["mcp_list_tools", "mcp_approval_request"]
    asked = first.output[1]
    assert (asked.name, json.loads(asked.arguments)) == ("add", {"a": 3, "b": 3})
    second = client.responses.create(
        model="scripted-1",
        previous_response_id=first.id,
        tools=[tool],
        input=[{"type": "mcp_approval_response", "approval_request_id": asked.id, "approve": True}],
    )
    assert _types(second) == ["mcp_call", "message"]
    assert second.output[0].approval_request_id == asked.id
    assert second.output[0].output == "6"
    assert second.output[1].content[0].text == "Answer to 'add please': 6"

    # Declined: no call is made; the model is told and answers.
    third = client.responses.create(model="scripted-1", input="add again", tools=[tool], previous_response_id=second.id)
    assert _types(third) == ["mcp_approval_request"]
    fourth = client.responses.create(
        model="scripted-1",
        previous_response_id=third.id,
        tools=[tool],
        input=[{"type": "mcp_approval_response", "approval_request_id": third.output[0].id, "approve": False}],
    )
    assert _types(fourth) == ["message"]
    assert "declined" in fourth.output[0].content[0].text


def test_a_failing_a_hanging_and_a_50_mb_call_each_end_as_an_error_item_and_the_loop_goes_on(mcp_gateway, mcp_server):
    client = _client(mcp_gateway, "scriptchat")
    tool = _mcp(mcp_server.url, allowed_tools=["fail", "slow", "huge"])
    started = time.monotonic()
    response = client.responses.create(model="scripted-1", input="try them", tools=[tool])
    elapsed = time.monotonic() - started
    assert response.status == "completed"
    calls = {item.name: item for item in response.output if item.type == "mcp_call"}
    assert set(calls) == {"fail", "slow", "huge"}
    assert calls["fail"].error.type == "mcp_tool_execution_error"
    assert calls["slow"].error.type == "http_error" and "mcp_timeout" in calls["slow"].error.message
    assert calls["huge"].error.type == "http_error" and "mcp_max_result_bytes" in calls["huge"].error.message
    assert all(c.status == "failed" and c.output is None for c in calls.values())
    assert response.output[-1].type == "message"
    assert elapsed < 30
    # The gateway still answers.
    assert requests.get(mcp_gateway.url + "/healthz", timeout=5).status_code == 200


def test_max_tool_calls_stops_the_calls_and_the_model_answers(mcp_gateway, mcp_server):
    client = _client(mcp_gateway, "scriptchat")
    tool = _mcp(mcp_server.url, allowed_tools=["add", "fail", "whoami"])
    response = client.responses.create(model="scripted-1", input="all of them", tools=[tool], max_tool_calls=1)
    assert response.status == "completed"
    assert _types(response) == ["mcp_list_tools", "mcp_call", "message"]
    assert response.max_tool_calls == 1


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("http://localhost:{port}/mcp", "localhost"),
        ("http://127.0.0.1:{port}/mcp", ""),
        ("http://10.1.2.3/mcp", "127.0.0.1"),
    ],
)
def test_a_host_the_operator_did_not_list_is_a_424_and_nothing_is_stored(scripted, mcp_server, tmp_path, url, hosts):
    server = Gunicorn(
        {
            "GATEWAY_PROVIDERS__SCRIPTCHAT__BASE_URL": scripted.url,
            "GATEWAY_PROVIDERS__SCRIPTCHAT__API": "chat",
            "GATEWAY_STORE_URL": f"sqlite:///{tmp_path / 's.sqlite3'}",
            "GATEWAY_KEY_SALT": "test-salt",
            "GATEWAY_MCP_HOSTS": hosts,
        },
        workers=1,
    )
    try:
        reply = requests.post(
            server.url + "/v1/responses",
            headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "scriptchat"},
            json={"model": "scripted-1", "input": "hi", "tools": [_mcp(url.format(port=mcp_server.port))]},
            timeout=30,
        )
    finally:
        server.stop()
    assert reply.status_code == 424, reply.text
    error = reply.json()["error"]
    assert error["message"].startswith("Error retrieving tool list from MCP server: 'tests'.")
    assert error["type"] == "external_connector_error"


@pytest.mark.parametrize("drip", [False, True], ids=["silent", "dripping"])
def test_a_server_that_hangs_is_a_424_within_the_timeout(mcp_gateway, drip):
    hanging = Hanging(drip)
    try:
        started = time.monotonic()
        reply = requests.post(
            mcp_gateway.url + "/v1/responses",
            headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "scriptchat"},
            json={"model": "scripted-1", "input": "hi", "tools": [_mcp(hanging.url)]},
            timeout=30,
        )
        elapsed = time.monotonic() - started
    finally:
        hanging.stop()
    assert reply.status_code == 424
    assert "mcp_timeout" in reply.json()["error"]["message"]
    assert elapsed < 2 * 3  # mcp_timeout is 3 s: wall-clock under gevent, each read checked under threads


def test_headers_reach_the_server_and_are_never_echoed_or_stored(mcp_gateway, mcp_server):
    client = _client(mcp_gateway, "scriptchat")
    tool = _mcp(mcp_server.url, allowed_tools=["whoami"], headers={"x-tenant": "acme-secret"})
    response = client.responses.create(model="scripted-1", input="who", tools=[tool])
    assert response.output[1].output == "acme-secret"
    assert response.tools[0].headers is None
    raw = requests.get(
        f"{mcp_gateway.url}/v1/responses/{response.id}",
        headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "scriptchat"},
        timeout=10,
    ).text
    assert "headers" not in json.loads(raw)["tools"][0]


def test_the_older_sse_transport(mcp_gateway):
    server = McpServer("sse")
    try:
        client = _client(mcp_gateway, "scriptchat")
        response = client.responses.create(
            model="scripted-1", input="add", tools=[_mcp(server.url, allowed_tools=["add"])]
        )
    finally:
        server.stop()
    assert _types(response) == ["mcp_list_tools", "mcp_call", "message"]
    assert response.output[1].output == "6"


# ------------------------------------------------------------------------------------------ the Agents SDK
def _agent_run(gateway, provider: str, tool_config: dict, steps, approve=None):
    import asyncio

    from agents import Agent, HostedMCPTool, OpenAIResponsesModel, set_tracing_disabled

    set_tracing_disabled(True)  # tracing exports to api.openai.com: nothing leaves this machine

    async def main():
        client = openai.AsyncOpenAI(
            base_url=gateway.url + "/v1",
            api_key="sk-agents-mcp",
            default_headers={"x-portkey-provider": provider},
            max_retries=0,
            _strict_response_validation=True,
        )
        try:
            agent = Agent(
                name="assistant",
                instructions="Answer with the tools.",
                tools=[HostedMCPTool(tool_config=tool_config, on_approval_request=approve)],
                model=OpenAIResponsesModel(model="scripted-1", openai_client=client),
            )
            return await steps(agent)
        finally:
            await client.close()

    return asyncio.run(main())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_agents_sdk_hosted_mcp_tool_over_three_turns(mcp_gateway, mcp_server, provider):
    from agents import Runner

    async def steps(agent):
        first = await Runner.run(agent, "add")
        second = await Runner.run(agent, "again", previous_response_id=first.last_response_id)
        third = await Runner.run(agent, [*second.to_input_list(), {"role": "user", "content": "third"}])
        return first, second, third

    config = _mcp(mcp_server.url, allowed_tools=["add"])
    first, second, third = _agent_run(mcp_gateway, provider, config, steps)
    assert first.final_output == "Answer to 'add': 6"
    assert second.final_output == "Answer to 'again': 6"
    assert third.final_output == "Answer to 'third': 6"
    kinds = [item.type for item in first.new_items]
    assert "mcp_list_tools_item" in kinds and "tool_call_item" in kinds


@pytest.mark.parametrize("provider", PROVIDERS)
def test_agents_sdk_approves_calls_streamed(mcp_gateway, mcp_server, provider):
    from agents import Runner

    asked = []

    def approve(request):
        asked.append(request.data.name)
        return {"approve": True}

    async def steps(agent):
        result = Runner.run_streamed(agent, "add please")
        events = [e async for e in result.stream_events()]
        return result, events

    config = _mcp(mcp_server.url, allowed_tools=["add"], require_approval="always")
    result, events = _agent_run(mcp_gateway, provider, config, steps, approve=approve)
    assert asked == ["add"]
    assert result.final_output == "Answer to 'add please': 6"
    raw = [e.data.type for e in events if e.type == "raw_response_event"]
    assert "response.mcp_call.completed" in raw


# ------------------------------------------------------------------------------------------ the AI SDK
@pytest.mark.node
@pytest.mark.parametrize("ai", ["ai6", "ai7"])
@pytest.mark.parametrize("scenario", ["mcp", "mcp-stream"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_ai_sdk_openai_mcp_tool(mcp_gateway, mcp_server, provider, scenario, ai, monkeypatch):
    from tests.test_real_clients import _node

    monkeypatch.setenv("MCP_URL", mcp_server.url)
    result = _node(mcp_gateway.url, provider, scenario, ai)
    assert result["text"] == "Answer to 'add': 6"
    calls = [c for step in result["steps"] for c in step["toolCalls"]]
    # The SDK names a call the platform ran "mcp.<tool>", with its arguments.
    assert calls == [{"name": "mcp.add", "input": {"a": 3, "b": 3}}]


# ------------------------------------------------------------------------------------------ background
def test_a_background_run_runs_the_loop_and_keeps_its_events(scripted, mcp_server, tmp_path):
    server = Gunicorn(
        {
            "GATEWAY_PROVIDERS__SCRIPTCHAT__BASE_URL": scripted.url,
            "GATEWAY_PROVIDERS__SCRIPTCHAT__API": "chat",
            "GATEWAY_STORE_URL": f"sqlite:///{tmp_path / 's.sqlite3'}",
            "GATEWAY_BACKGROUND_QUEUE": f"sqlite:///{tmp_path / 'queue.sqlite3'}",
            "GATEWAY_BACKGROUND_CONSUMERS": "1",
            "GATEWAY_KEY_SALT": "test-salt",
            "GATEWAY_MCP_HOSTS": "127.0.0.1",
        },
        workers=1,
    )
    client = _client(server, "scriptchat")
    tool = _mcp(mcp_server.url, allowed_tools=["whoami"], headers={"x-tenant": "bg-secret"}, authorization="tok-hush")
    queued = client.responses.create(model="scripted-1", input="who", tools=[tool], background=True)
    assert queued.status in ("queued", "in_progress")
    deadline = time.monotonic() + 30
    while (done := client.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert done.status == "completed", done.error
    assert _types(done) == ["mcp_list_tools", "mcp_call", "message"]
    assert done.output[1].output == "bg-secret"
    assert done.background is True and done.id == queued.id
    # The stored events replay as one stream, numbered from 0.
    replay = requests.get(
        f"{server.url}/v1/responses/{queued.id}",
        params={"stream": "true"},
        headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "scriptchat"},
        timeout=10,
    )
    events = strict_types.sse_events(replay.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "response.mcp_call.completed" in [e["type"] for e in events]
    server.stop()
    # The MCP server's authorization was sealed in the queued job and never echoed: nowhere in the store.
    for path in tmp_path.glob("*.sqlite3*"):
        assert b"tok-hush" not in path.read_bytes(), path


# ------------------------------------------------------------------------------------------ policy, unit
@pytest.mark.parametrize(
    ("hosts", "host", "allowed"),
    [
        ([], "mcp.example.com", False),
        (["mcp.example.com"], "mcp.example.com", True),
        (["mcp.example.com"], "MCP.Example.com", True),
        (["mcp.example.com"], "evil.example.com", False),
        (["*.example.com"], "a.example.com", True),
        (["*.example.com"], "example.com", False),
        (["10.0.0.0/8"], "10.1.2.3", True),
        ([], "10.1.2.3", False),
        ([], "127.0.0.1", False),
        ([], "::ffff:127.0.0.1", False),
        (["127.0.0.1"], "127.0.0.1", True),
        ([], "8.8.8.8", False),  # an address in the URL is listed, public or not
        (["8.8.8.0/24"], "8.8.8.8", True),
        (["mcp.example.com."], "mcp.example.com", True),
        (["10.0.0.0/8"], "64:ff9b::a00:5", True),  # NAT64 to 10.0.0.5
        ([], "64:ff9b::a00:5", False),
        ([], "0.0.0.0", False),
    ],
)
def test_host_policy(hosts, host, allowed):
    from gateway.mcp import HostPolicy

    assert HostPolicy.of(hosts).host_allowed(host) is allowed


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("127.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("64:ff9b::a00:5", False),  # NAT64 to 10.0.0.5
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("::127.0.0.1", False),
        ("169.254.169.254", False),
    ],
)
def test_the_connected_address_of_a_listed_name(address, allowed):
    import ipaddress

    from gateway.mcp import HostPolicy

    assert HostPolicy.of(["mcp.example.com"]).address_allowed(ipaddress.ip_address(address)) is allowed


@pytest.mark.parametrize(
    "url",
    ["http://evil.example\\@mcp.example.com/mcp", "http://user:pw@mcp.example.com/mcp", "http://[::1/mcp", "ftp://x/"],
)
def test_a_server_url_two_parsers_could_read_apart_or_with_credentials_is_a_400(mcp_gateway, url):
    reply = requests.post(
        mcp_gateway.url + "/v1/responses",
        headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "scriptchat"},
        json={"model": "scripted-1", "input": "hi", "tools": [_mcp(url)]},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "tools[0].server_url"


def test_a_client_function_keeps_its_name_beside_an_mcp_tool_of_the_same(mcp_gateway, mcp_server):
    client = _client(mcp_gateway, "scriptchat")
    own = {"type": "function", "name": "add", "parameters": {"type": "object", "properties": {}}}
    response = client.responses.create(
        model="scripted-1", input="add", tools=[own, _mcp(mcp_server.url, allowed_tools=["add"])]
    )
    # The model called the client's own function first: it comes back to the client, not to the server.
    assert _types(response) == ["mcp_list_tools", "function_call"]
    assert response.output[1].name == "add"


def test_a_previous_response_the_gateway_does_not_hold_is_not_sent_the_servers_credentials(mcp_gateway, mcp_server):
    reply = requests.post(
        mcp_gateway.url + "/v1/responses",
        headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "scriptnative"},
        json={
            "model": "scripted-1",
            "input": "hi",
            "previous_response_id": "resp_only_the_provider_knows",
            "tools": [_mcp(mcp_server.url, headers={"x-tenant": "hush"})],
        },
        timeout=30,
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "previous_response_not_found"


def test_a_name_listed_but_resolving_to_loopback_is_refused_at_connect(mcp_server):
    from gateway import mcp

    session = mcp.Session(
        f"http://localhost:{mcp_server.port}/mcp", {}, mcp.Limits(mcp.HostPolicy.of(["localhost"]), 3, 1000)
    )
    with pytest.raises(mcp.Refused, match="resolved to is not one"):
        session.list_tools()
    session.close()


def test_mcp_hosts_entries_are_checked_at_start_up():
    from gateway.config import Settings, SettingsError

    with pytest.raises(SettingsError, match="mcp_hosts"):
        Settings.load({"mcp_hosts": ["https://mcp.example.com/path"]})
    assert Settings.load({"mcp_hosts": ["mcp.example.com", "*.corp.example", "10.0.0.0/8", "::1"]}).mcp_hosts


# ------------------------------------------------------------------------------------------ conversations
def test_a_conversation_reuses_its_listing_and_holds_the_calls(mcp_gateway, mcp_server):
    client = _client(mcp_gateway, "scriptchat")
    conversation = client.conversations.create()
    tool = _mcp(mcp_server.url, allowed_tools=["add"])
    first = client.responses.create(model="scripted-1", input="add", tools=[tool], conversation=conversation.id)
    second = client.responses.create(model="scripted-1", input="more", tools=[tool], conversation=conversation.id)
    assert _types(first) == ["mcp_list_tools", "mcp_call", "message"]
    assert _types(second) == ["mcp_call", "message"]
    items = client.conversations.items.list(conversation.id, order="asc").data
    turns = [["message", "mcp_list_tools", "mcp_call", "message"], ["message", "mcp_call", "message"]]
    assert [i.type for i in items] == turns[0] + turns[1]


@pytest.mark.node
@pytest.mark.parametrize("ai", ["ai6", "ai7"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_ai_sdk_approves_an_mcp_call_over_three_turns(mcp_gateway, mcp_server, provider, ai, monkeypatch):
    from tests.test_real_clients import _node

    monkeypatch.setenv("MCP_URL", mcp_server.url)
    result = _node(mcp_gateway.url, provider, "mcp-approve", ai)
    assert result["asked"] == 1
    assert result["first"]["text"] == ""  # the response ended with the approval request
    assert result["second"]["text"] == "Answer to 'add please': 6"
    assert result["second"]["steps"][0]["toolResults"][0]["output"] == "6"
    # A new question: the call needs approval again.
    assert result["third"]["text"] == "" and result["third"]["steps"][0]["toolCalls"][0]["name"] == "mcp.add"

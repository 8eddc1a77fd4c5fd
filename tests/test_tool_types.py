"""Tool types beyond functions on a provider the gateway emulates: namespaces (Codex's) flattened and named
back, tools the platform would run left out by policy and said so; through gunicorn with the openai SDK.
"""

from __future__ import annotations

import json

import openai
import pytest

from gateway.emulation.request import chat_name, to_chat
from gateway.errors import InvalidRequest
from tests.test_emulation import TOOLS as EMULATION_TOOLS

LOOKUP = EMULATION_TOOLS[0]  # the function tool the emulation tests use
# As Codex sends them: functions grouped under a namespace, and a hosted web search it does not run itself.
TOOLS = [
    {"type": "namespace", "name": "repo", "description": "The repository", "tools": [LOOKUP]},
    {"type": "web_search", "external_web_access": False},
]


@pytest.fixture
def sdk(gateway, make_sdk):
    return make_sdk(gateway.url + "/v1", provider="fakechat")


def test_a_namespaced_call_comes_back_with_its_namespace_and_hosted_tools_are_left_out_and_said(sdk, fake):
    raw = sdk.responses.with_raw_response.create(model="small", input="find cats", tools=TOOLS)
    assert raw.headers["x-gateway-omitted-tools"] == "web_search"
    first = raw.parse()
    [call] = first.output
    assert call.type == "function_call" and call.name == "lookup" and call.namespace == "repo"
    assert json.loads(call.arguments) == {"query": "find cats"}
    sent = fake.requests[-1]["body"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["repo__lookup"]  # and no web_search
    assert [t.type for t in first.tools] == ["namespace", "web_search"]  # echoed as the client sent them

    # The call in history goes back under its flattened name; the output answers it.
    second = sdk.responses.create(
        model="small",
        previous_response_id=first.id,
        tools=TOOLS,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "3 cats"}],
    )
    assert second.output_text == "Tool said: 3 cats"
    messages = fake.requests[-1]["body"]["messages"]
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "repo__lookup"


def test_an_omitted_tool_is_in_the_access_log_and_counted(gateway, sdk):
    import requests

    def counted() -> float:
        text = requests.get(gateway.url + "/metrics", timeout=10).text
        series = 'gateway_omitted_tools_total{provider="fakechat",type="web_search"} '
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(series))

    before = counted()
    sdk.responses.create(model="small", input="find cats", tools=TOOLS)
    assert counted() == before + 1
    lines = [json.loads(line) for line in gateway.output().splitlines() if '"omitted_tools"' in line]
    assert lines and lines[-1]["omitted_tools"] == "web_search" and lines[-1]["provider"] == "fakechat"


def test_a_namespaced_call_streamed_comes_back_with_its_namespace(sdk):
    with sdk.responses.stream(model="small", input="find cats", tools=TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_response()
    [call] = final.output
    assert call.name == "lookup" and call.namespace == "repo"
    added = [e for e in events if e.type == "response.output_item.added"]
    assert added[0].item.name == "lookup" and added[0].item.namespace == "repo"


def test_hosted_tools_refused_when_the_setting_says_so(settings):
    from gateway import create_app
    from tests.conftest import KEY, close_app

    app = create_app({**settings, "hosted_tools": "refuse"})
    try:
        resp = app.test_client().post(
            "/v1/responses",
            json={"model": "small", "input": "x", "tools": TOOLS},
            headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"},
        )
        assert resp.status_code == 400
        assert resp.json["error"]["param"] == "tools[1]" and "web_search" in resp.json["error"]["message"]
    finally:
        close_app(app)


def test_long_namespaced_names_are_cut_to_64_with_a_hash_the_same_every_time():
    name = chat_name("n" * 40, "f" * 40)
    assert len(name) == 64 and name == chat_name("n" * 40, "f" * 40) and name != chat_name("n" * 40, "g" * 40)
    assert chat_name("repo", "lookup") == "repo__lookup" and chat_name(None, "lookup") == "lookup"


def test_tool_choice_naming_a_namespaced_function_or_an_omitted_tool():
    body = {"model": "m", "tools": TOOLS}
    named = to_chat(
        {**body, "tool_choice": {"type": "function", "name": "lookup", "namespace": "repo"}},
        [],
        [],
        max_tokens_param="max_tokens",
    )
    assert named["tool_choice"] == {"type": "function", "function": {"name": "repo__lookup"}}
    omitted: list[str] = []
    chosen = to_chat(
        {**body, "tool_choice": {"type": "web_search"}}, [], [], max_tokens_param="max_tokens", omitted=omitted
    )
    assert chosen["tool_choice"] == "auto" and omitted == ["web_search"]
    with pytest.raises(InvalidRequest):
        to_chat(
            {**body, "tool_choice": {"type": "web_search"}},
            [],
            [],
            max_tokens_param="max_tokens",
            hosted_tools="refuse",
        )


def test_client_metadata_never_reaches_a_chat_provider():
    chat = to_chat({"model": "m", "client_metadata": {"originator": "codex_exec"}}, [], [], max_tokens_param="x")
    assert "client_metadata" not in chat


def test_an_sdk_with_strict_validation_reads_the_namespaced_call(gateway):
    from tests.conftest import KEY

    with openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=KEY,
        default_headers={"x-portkey-provider": "fakechat"},
        max_retries=0,
        _strict_response_validation=True,
    ) as client:
        out = client.responses.create(model="small", input="find cats", tools=TOOLS)
        with client.responses.stream(model="small", input="find cats", tools=TOOLS) as stream:
            streamed = stream.get_final_response()
    assert isinstance(out.output[0], openai.types.responses.ResponseFunctionToolCall)
    assert out.output[0].namespace == streamed.output[0].namespace == "repo"


# ------------------------------------------------------------------------------------------ custom tools
# Codex's freeform apply_patch for gpt-5.x model names: a custom tool whose input is held to a grammar.
APPLY_PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch" /(.|\\n)*/'},
}


@pytest.fixture(scope="module")
def scripted_app():
    from gateway import create_app
    from tests.conftest import close_app
    from tests.scripted_model import ScriptedModel

    model = ScriptedModel().start()
    app = create_app(
        {
            "store_url": "sqlite://",
            "providers": {"scriptchat": {"base_url": model.url, "api": "chat"}},
        }
    )
    yield app, model
    close_app(app)
    model.stop()


def _post(app, body: dict):
    headers = {"Authorization": "Bearer sk-test", "x-portkey-provider": "scriptchat"}
    return app.test_client().post("/v1/responses", json=body, headers=headers)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_custom_tool_is_a_function_of_one_string_and_its_call_a_custom_tool_call(scripted_app, stream):
    from tests import strict_types as strict
    from tests.scripted_model import MODEL

    app, model = scripted_app
    resp = _post(app, {"model": MODEL, "input": "fix it", "tools": [APPLY_PATCH], "stream": stream})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    if stream:
        events = strict.sse_events(resp.get_data(as_text=True))
        first = strict.response(strict.stream(events))
        kinds = [e["type"] for e in events]
        assert "response.custom_tool_call_input.done" in kinds and "response.function_call_arguments.delta" not in kinds
    else:
        first = strict.response(resp.json)
    [call] = first.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch" and call.input == "input-value"
    sent = model.bodies("/v1/chat/completions")[-1]
    [function] = [t["function"] for t in sent["tools"]]
    assert function["name"] == "apply_patch" and function["parameters"]["required"] == ["input"]
    assert "*** Begin Patch" in function["description"]  # the grammar, for the model to follow

    # Its output goes back as the tool's answer; the call in history as the function it was.
    second = _post(
        app,
        {
            "model": MODEL,
            "previous_response_id": first.id,
            "tools": [APPLY_PATCH],
            "input": [{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done!"}],
        },
    )
    assert second.status_code == 200, second.get_data(as_text=True)
    assert strict.response(second.json).output_text == "Answer to 'fix it': Done!"
    messages = model.bodies("/v1/chat/completions")[-1]["messages"]
    assert messages[-2]["tool_calls"][0]["function"] == {"name": "apply_patch", "arguments": '{"input": "input-value"}'}


def test_items_the_chain_already_holds_are_not_sent_twice():
    call = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup", "arguments": "{}"}
    output = {"type": "function_call_output", "call_id": "call_1", "output": "3 cats"}
    history = [{"type": "message", "role": "user", "content": "find cats"}, call, output]
    resent = [dict(call), dict(output), {"type": "message", "role": "user", "content": "and dogs?"}]
    chat = to_chat({"model": "m"}, history, resent, max_tokens_param="max_tokens")
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["user", "assistant", "tool", "user"]  # the call once, its output once, then the new text


# ------------------------------------------------------------------------------------------ client-run tools
# Tools the client runs (Codex, the Agents SDK): functions for the chat model, their calls the client's items.
CLIENT_CASES = {
    "local_shell": (
        {"type": "local_shell"},
        "run `ls`",
        lambda call: call.action.command == ["bash", "-lc", "ls"] and call.action.type == "exec",
        lambda call: {"type": "local_shell_call_output", "id": call.call_id, "output": "a.txt"},
        "a.txt",
    ),
    "shell": (
        {"type": "shell", "environment": {"type": "local"}},
        "run `ls`",
        lambda call: call.action.commands == ["ls"],
        lambda call: {
            "type": "shell_call_output",
            "call_id": call.call_id,
            "output": [{"stdout": "a.txt\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}],
        },
        "a.txt\n\n[exit code 0]",
    ),
    "apply_patch": (
        {"type": "apply_patch"},
        "write `hi` to `a.txt`",
        lambda call: (
            call.operation.type == "create_file" and call.operation.path == "a.txt" and call.operation.diff == "+hi\n"
        ),
        lambda call: {
            "type": "apply_patch_call_output",
            "call_id": call.call_id,
            "status": "completed",
            "output": "ok",
        },
        "completed: ok",
    ),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("kind", sorted(CLIENT_CASES))
def test_a_client_run_tool_is_a_function_and_its_call_the_clients_item(scripted_app, kind, stream):
    from tests import strict_types as strict
    from tests.scripted_model import MODEL

    app, model = scripted_app
    tool, prompt, matches, output_of, said = CLIENT_CASES[kind]
    resp = _post(app, {"model": MODEL, "input": prompt, "tools": [tool], "stream": stream})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    if stream:
        events = strict.sse_events(resp.get_data(as_text=True))
        first = strict.response(strict.stream(events))
        kinds = [e["type"] for e in events]
        assert "response.function_call_arguments.delta" not in kinds
        if kind == "shell":
            done = [e for e in events if e["type"] == "response.shell_call_command.done"]
            assert [e["command"] for e in done] == ["ls"]
    else:
        first = strict.response(resp.json)
    [call] = first.output
    assert call.type == f"{kind}_call" and call.status == "completed" and matches(call), call
    assert first.tools[0].type == kind  # echoed as sent
    [function] = [t["function"] for t in model.bodies("/v1/chat/completions")[-1]["tools"]]
    assert function["name"] == kind

    # The output answers the call; the call goes back in history as the function it was.
    second = _post(
        app,
        {"model": MODEL, "previous_response_id": first.id, "tools": [tool], "input": [output_of(call)]},
    )
    assert second.status_code == 200, second.get_data(as_text=True)
    assert strict.response(second.json).output_text == f"Answer to '{prompt}': {said}"
    messages = model.bodies("/v1/chat/completions")[-1]["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id and messages[-1]["tool_call_id"] == call.call_id

    # A third turn replays both from the store: the output still names its call (local_shell's by its id).
    third = _post(app, {"model": MODEL, "previous_response_id": second.json["id"], "tools": [tool], "input": "ok"})
    assert third.status_code == 200, third.get_data(as_text=True)
    replayed = model.bodies("/v1/chat/completions")[-1]["messages"]
    assert [m.get("tool_call_id") for m in replayed if m["role"] == "tool"] == [call.call_id]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_client_tool_search_loads_tools_the_model_can_call_next(scripted_app, stream):
    from tests import strict_types as strict
    from tests.scripted_model import MODEL

    app, model = scripted_app
    search = {"type": "tool_search", "execution": "client", "description": "Find more tools."}
    resp = _post(app, {"model": MODEL, "input": "find a tool", "tools": [search], "stream": stream})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    if stream:
        first = strict.response(strict.stream(strict.sse_events(resp.get_data(as_text=True))))
    else:
        first = strict.response(resp.json)
    [call] = first.output
    assert call.type == "tool_search_call" and call.execution == "client" and call.arguments == {"query": "query-value"}

    found = {
        "type": "tool_search_output",
        "call_id": call.call_id,
        "execution": "client",
        "status": "completed",
        "tools": [{**LOOKUP, "strict": False}],
    }
    second = _post(app, {"model": MODEL, "previous_response_id": first.id, "tools": [search], "input": [found]})
    assert second.status_code == 200, second.get_data(as_text=True)
    [lookup] = strict.response(second.json).output
    assert lookup.type == "function_call" and lookup.name == "lookup"  # a tool the search loaded
    sent = model.bodies("/v1/chat/completions")[-1]
    assert [t["function"]["name"] for t in sent["tools"]] == ["tool_search", "lookup"]
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "Loaded tools: lookup"}


def test_allowed_tools_offers_only_those_and_keeps_the_mode():
    tools = [LOOKUP, {**LOOKUP, "name": "other"}, {"type": "shell"}, TOOLS[0]]
    choice = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "shell"}, {"type": "namespace", "name": "repo"}],
    }
    chat = to_chat({"model": "m", "tools": tools, "tool_choice": choice}, [], [], max_tokens_param="max_tokens")
    assert [t["function"]["name"] for t in chat["tools"]] == ["shell", "repo__lookup"]
    assert chat["tool_choice"] == "required"
    shell = to_chat({"model": "m", "tools": tools, "tool_choice": {"type": "shell"}}, [], [], max_tokens_param="m")
    assert shell["tool_choice"] == {"type": "function", "function": {"name": "shell"}}


def test_a_history_begun_on_a_native_provider_continues_on_an_emulated_one(scripted_app):
    """Items a native provider made (its hosted searches, a shell call, encrypted reasoning) in the input of a
    stateless client (store: false, as Codex sends): the platform's own are left out, the rest carried over."""
    from tests import strict_types as strict
    from tests.scripted_model import MODEL

    app, model = scripted_app
    history = [
        {"type": "message", "role": "user", "content": "what is new, then run `ls`"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA..."},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "new"}},
        {
            "type": "shell_call",
            "id": "sh_1",
            "call_id": "call_sh",
            "action": {"commands": ["ls"], "timeout_ms": None, "max_output_length": None},
            "status": "completed",
        },
        {
            "type": "shell_call_output",
            "call_id": "call_sh",
            "output": [{"stdout": "a.txt", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}],
        },
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Nothing new; a.txt."}]},
        {"type": "message", "role": "user", "content": "thanks"},
    ]
    tools = [{"type": "shell", "environment": {"type": "local"}}, {"type": "web_search"}]
    resp = _post(app, {"model": MODEL, "input": history, "tools": tools, "store": False})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert strict.response(resp.json).status == "completed"
    messages = model.bodies("/v1/chat/completions")[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "user"]
    assert messages[1]["tool_calls"][0]["function"] == {"name": "shell", "arguments": '{"commands": ["ls"]}'}
    assert messages[2]["content"] == "a.txt\n[exit code 0]"


def test_a_client_tool_call_cut_off_stays_a_function_call_and_a_late_name_breaks_nothing():
    from gateway.emulation import response as build
    from gateway.emulation.request import tool_names
    from gateway.emulation.stream import StreamTranslator
    from tests import strict_types as strict

    tools = [{"type": "shell", "environment": {"type": "local"}}, LOOKUP]
    body = {"model": "m", "tools": tools}
    cut = {"id": "call_1", "type": "function", "function": {"name": "shell", "arguments": '{"commands": ["rm -'}}
    answer = {"choices": [{"message": {"role": "assistant", "tool_calls": [cut]}, "finish_reason": "length"}]}
    [item] = build.from_chat(body, answer, "resp_1", None)["output"]
    assert item["type"] == "function_call" and item["name"] == "shell"  # never a made-up command

    def streamed(deltas: list[dict]) -> dict:
        translator = StreamTranslator(build.skeleton(body, "resp_2", 0, None), tool_names(tools))
        events = translator.start()
        for delta in deltas:
            events += translator.feed({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        translator.finish_reason = "length"
        final, closing = translator.complete()
        strict.stream([e.json() for e in events + closing])
        return final

    [item] = streamed([{"tool_calls": [{"index": 0, **cut}]}])["output"]
    assert item["type"] == "function_call" and item["arguments"] == '{"commands": ["rm -'
    # A name that comes after the call's first piece (and the call was announced as a function call).
    late = streamed(
        [
            {"tool_calls": [{"index": 0, "id": "call_2", "type": "function", "function": {"arguments": "{"}}]},
            {"tool_calls": [{"index": 0, "function": {"name": "shell", "arguments": "}"}}]},
        ]
    )
    assert late["output"][0]["type"] == "function_call" and late["output"][0]["arguments"] == "{}"


def test_a_tool_choice_naming_a_tool_left_out_is_auto_and_none_is_sent_without_tools():
    container = {"type": "shell", "environment": {"type": "container_auto"}}  # the platform's: left out
    chat = to_chat(
        {"model": "m", "tools": [container, LOOKUP], "tool_choice": {"type": "shell"}}, [], [], max_tokens_param="m"
    )
    assert chat["tool_choice"] == "auto" and [t["function"]["name"] for t in chat["tools"]] == ["lookup"]
    nothing = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "gone"}]}
    chat = to_chat({"model": "m", "tools": [LOOKUP], "tool_choice": nothing}, [], [], max_tokens_param="m")
    assert "tools" not in chat and "tool_choice" not in chat

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

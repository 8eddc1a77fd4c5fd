"""Real clients, unchanged, driving tools through the gateway under gunicorn: openai-python (strict), the
OpenAI Agents SDK and the Vercel AI SDK (Node), each on an emulated provider and on a native one.

Both providers are the scripted model of ``tests/scripted_model.py``. Every Response, stream event and
``input_items`` page the clients receive is validated strictly against the openai SDK's types.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import openai
import pytest
import requests

from tests import strict_types as strict
from tests.scripted_model import MODEL, NARRATION

NODE_CLIENT = Path(__file__).parent / "node_client"
PROVIDERS = ["scriptchat", "scriptnative"]  # api = "chat" (emulated), api = "responses" (native)
provider_kinds = pytest.mark.parametrize("provider", PROVIDERS)

TOOLS = [
    {
        "type": "function",
        "name": name,
        "description": description,
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    }
    for name, description in (("get_weather", "The weather in a city"), ("get_time", "The local time in a city"))
]
BOTH = "sunny in Paris; noon in Paris"


def run_tool(name: str, arguments: str) -> str:
    city = json.loads(arguments)["city"]
    return {"get_weather": f"sunny in {city}", "get_time": f"noon in {city}"}[name]


@pytest.fixture(scope="module")
def gateway(scripted_gateway):
    return scripted_gateway


@pytest.fixture
def sdk(gateway, provider):
    """openai-python as strict as it gets: every answer is validated against its types."""
    client = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key="sk-openai-python",
        max_retries=0,
        default_headers={"x-portkey-provider": provider},
        _strict_response_validation=True,
    )
    yield client
    client.close()


# ------------------------------------------------------------------------------------------ openai-python
def _create(sdk: openai.OpenAI, stream: bool, **params) -> openai.types.responses.Response:
    if not stream:
        return sdk.responses.create(model=MODEL, tools=TOOLS, **params)
    events = list(sdk.responses.create(model=MODEL, tools=TOOLS, stream=True, **params))
    final = strict.stream([e.model_dump(mode="json", exclude_unset=True, by_alias=True) for e in events])
    return strict.response(final)


def _tool_loop(sdk: openai.OpenAI, text: str, stream: bool) -> list:
    """Run the tools the model calls until it answers; every response of the chain, in order."""
    chain = [_create(sdk, stream, input=text)]
    while calls := [o for o in chain[-1].output if o.type == "function_call"]:
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": run_tool(c.name, c.arguments)}
            for c in calls
        ]
        chain.append(_create(sdk, stream, input=outputs, previous_response_id=chain[-1].id))
    return chain


@pytest.mark.slow
@provider_kinds
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_python_drives_two_tools_step_by_step(sdk, provider, stream):
    chain = _tool_loop(sdk, "What is the weather and the time?", stream)
    assert [[o.name for o in r.output if o.type == "function_call"] for r in chain] == [
        ["get_weather"],
        ["get_time"],
        [],
    ]
    assert chain[-1].output_text == f"Answer to 'What is the weather and the time?': {BOTH}"
    for response in chain:
        assert sdk.responses.retrieve(response.id).output == response.output
        assert list(sdk.responses.input_items.list(response.id))  # strict pages
        strict.response(sdk.responses.retrieve(response.id).model_dump(mode="json", exclude_unset=True, by_alias=True))


@provider_kinds
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_python_parallel_calls_with_text(sdk, provider, stream):
    chain = _tool_loop(sdk, "parallel, narrate: what is the weather and the time?", stream)
    first = chain[0]
    assert [o.type for o in first.output] == ["message", "function_call", "function_call"]
    assert first.output_text == NARRATION
    assert [json.loads(o.arguments) for o in first.output[1:]] == [{"city": "Paris"}] * 2
    assert len(chain) == 2 and chain[-1].output_text.endswith(BOTH)


@provider_kinds
def test_input_items_come_back_in_the_sdk_item_shapes(sdk, provider):
    short_forms = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": "I will check."},
        {"type": "function_call", "call_id": "call_earlier", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call_output", "call_id": "call_earlier", "output": "rain in Oslo"},
        {"role": "user", "content": [{"type": "input_text", "text": "And now?"}]},
    ]
    created = sdk.responses.create(model=MODEL, input=short_forms)
    listed = list(sdk.responses.input_items.list(created.id, limit=2, order="asc"))  # three strict pages
    assert [item.type for item in listed] == ["message"] * 3 + ["function_call", "function_call_output", "message"]
    assert [i.content[0].text for i in listed if i.type == "message"] == [
        "Be brief.",
        "What is the weather?",
        "I will check.",
        "And now?",
    ]
    assert [i.content[0].type for i in listed if i.type == "message"] == [
        "input_text",
        "input_text",
        "output_text",
        "input_text",
    ]
    assert all(i.status == "completed" for i in listed)
    raw = requests.get(
        f"{sdk.base_url}responses/{created.id}/input_items",
        headers={"Authorization": f"Bearer {sdk.api_key}", "x-portkey-provider": provider},
        params={"limit": 100},
        timeout=10,
    )
    strict.items_page(raw.json())


@provider_kinds
def test_models_are_relayed_from_the_provider(sdk, provider):
    assert [m.id for m in sdk.models.list()] == [MODEL]
    assert sdk.models.retrieve(MODEL).owned_by == "tests"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


@pytest.mark.slow
@provider_kinds
def test_compact_and_count_answer_in_the_sdk_types(sdk, provider):
    created = sdk.responses.create(model=MODEL, input="What is the weather?")
    compacted = sdk.responses.compact(model=MODEL, previous_response_id=created.id)  # strict: CompactedResponse
    assert compacted.object == "response.compaction" and compacted.output[-1].type == "compaction"
    later = sdk.responses.create(
        model=MODEL, input=[*[o.model_dump() for o in compacted.output], {"role": "user", "content": "Hi"}]
    )
    assert later.output_text.startswith("Answer to 'Hi'")
    counted = sdk.responses.input_tokens.count(model=MODEL, input="hi", previous_response_id=created.id)
    assert counted.object == "response.input_tokens" and counted.input_tokens > 0


@provider_kinds
def test_cancel_of_a_response_not_made_in_the_background_is_400(sdk, provider):
    created = sdk.responses.create(model=MODEL, input="hi")
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.cancel(created.id)
    assert "background=true" in info.value.message and info.value.param == "response_id"


# ------------------------------------------------------------------------------------------ Agents SDK
def _agents_run(gateway_url: str, provider: str, steps):
    """Run ``steps(agent)`` (a coroutine function) with an agent on the gateway; its result."""
    from agents import Agent, OpenAIResponsesModel, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # tracing exports to api.openai.com: nothing leaves this machine

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    @function_tool
    def get_time(city: str) -> str:
        """The local time in a city."""
        return f"noon in {city}"

    async def main():
        client = openai.AsyncOpenAI(
            base_url=gateway_url + "/v1",
            api_key="sk-agents",
            default_headers={"x-portkey-provider": provider},
            max_retries=0,
            _strict_response_validation=True,
        )
        try:
            agent = Agent(
                name="assistant",
                instructions="Answer with the tools.",
                tools=[get_weather, get_time],
                model=OpenAIResponsesModel(model=MODEL, openai_client=client),
            )
            return await steps(agent)
        finally:
            await client.close()

    return asyncio.run(main())


@provider_kinds
def test_agents_sdk_run_and_follow_up_by_previous_response_id(gateway, provider):
    from agents import Runner

    async def steps(agent):
        first = await Runner.run(agent, "What is the weather and the time?")
        second = await Runner.run(agent, "And tomorrow?", previous_response_id=first.last_response_id)
        return first, second

    first, second = _agents_run(gateway.url, provider, steps)
    assert first.final_output == f"Answer to 'What is the weather and the time?': {BOTH}"
    assert second.final_output == f"Answer to 'And tomorrow?': {BOTH}"
    assert len(first.raw_responses) == 3 and len(second.raw_responses) == 3
    for raw in first.raw_responses + second.raw_responses:
        assert raw.response_id.startswith("resp_")


@provider_kinds
def test_agents_sdk_run_streamed(gateway, provider):
    from agents import Runner

    async def steps(agent):
        result = Runner.run_streamed(agent, "parallel: what is the weather and the time?")
        raw = [e.data for e in [e async for e in result.stream_events()] if e.type == "raw_response_event"]
        return result, raw

    result, raw = _agents_run(gateway.url, provider, steps)
    assert result.final_output == f"Answer to 'parallel: what is the weather and the time?': {BOTH}"
    # Two model calls (both tools at once, then the answer), each a whole and consistent event stream.
    dumped = [e.model_dump(mode="json", exclude_unset=True, by_alias=True) for e in raw]
    starts = [i for i, e in enumerate(dumped) if e["type"] == "response.created"] + [len(dumped)]
    streams = [dumped[a:b] for a, b in itertools.pairwise(starts)]
    assert len(streams) == 2
    finals = [strict.stream(events) for events in streams]
    assert [o["name"] for o in finals[0]["output"]] == ["get_weather", "get_time"]


# ------------------------------------------------------------------------------------------ the AI SDK
# ai 7 declares Node >= 22; it runs these scenarios on the Node 20 of these machines all the same.
ai_versions = pytest.mark.parametrize("ai", [pytest.param(v, marks=pytest.mark.node) for v in ("ai6", "ai7")])


def _node(gateway_url: str, provider: str, scenario: str, ai: str) -> dict:
    if shutil.which("node") is None or not (NODE_CLIENT / "node_modules").is_dir():
        pytest.fail("The Node test client needs node and `npm ci` in tests/node_client (see .ci/run).")
    done = subprocess.run(
        ["node", "scenarios.mjs", gateway_url + "/v1", provider, scenario, ai],
        cwd=NODE_CLIENT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    for answer in outcome["answers"]:
        assert answer["status"] == 200, answer["text"][:500]
        if answer["contentType"].startswith("text/event-stream"):
            strict.stream(strict.sse_events(answer["text"]))
        else:
            strict.response(json.loads(answer["text"]))
    assert outcome["ok"], outcome["error"]
    for response_id in _response_ids(outcome["answers"]):
        page = requests.get(
            f"{gateway_url}/v1/responses/{response_id}/input_items",
            params={"limit": 100},
            headers={"Authorization": "Bearer sk-node-client", "x-portkey-provider": provider},
            timeout=10,
        )
        assert page.status_code == 200, page.text
        strict.items_page(page.json())
    return outcome["result"]


def _response_ids(answers: list[dict]) -> list[str]:
    ids = []
    for answer in answers:
        if answer["contentType"].startswith("text/event-stream"):
            ids.append(strict.sse_events(answer["text"])[-1]["response"]["id"])
        elif answer["url"].endswith("/responses"):
            ids.append(json.loads(answer["text"])["id"])
    return ids


def _step_calls(summary: dict) -> list[list[str]]:
    return [[c["name"] for c in step["toolCalls"]] for step in summary["steps"]]


@pytest.mark.slow
@ai_versions
@provider_kinds
def test_ai_sdk_generate_text_with_tools(gateway, provider, ai):
    result = _node(gateway.url, provider, "generate", ai)
    assert _step_calls(result) == [["get_weather"], ["get_time"], []]
    assert result["text"] == f"Answer to 'What is the weather and the time?': {BOTH}"


@ai_versions
@provider_kinds
def test_ai_sdk_stream_text_with_parallel_tools(gateway, provider, ai):
    result = _node(gateway.url, provider, "stream", ai)
    assert _step_calls(result) == [["get_weather", "get_time"], []]
    assert [c["input"] for c in result["steps"][0]["toolCalls"]] == [{"city": "Paris"}] * 2
    assert result["text"] == f"Answer to 'parallel: what is the weather and the time?': {BOTH}"


# With store on, the AI SDK refers to earlier assistant items by item_reference in these two.
@pytest.mark.slow
@provider_kinds
@ai_versions
def test_ai_sdk_text_beside_tool_calls(gateway, provider, ai):
    result = _node(gateway.url, provider, "narrate", ai)
    assert _step_calls(result) == [["get_weather"], ["get_time"], []]
    assert result["steps"][0]["text"] == NARRATION
    assert result["text"] == f"Answer to 'narrate: what is the weather and the time?': {BOTH}"


@pytest.mark.slow
@provider_kinds
@pytest.mark.parametrize("scenario", ["multiturn", "multiturn-stream"])
@ai_versions
def test_ai_sdk_multi_turn_appending_response_messages(gateway, provider, scenario, ai):
    result = _node(gateway.url, provider, scenario, ai)
    assert result["first"]["text"] == "Answer to 'What is the weather?': " + BOTH
    assert result["second"]["text"] == "Answer to 'And tomorrow?': " + BOTH

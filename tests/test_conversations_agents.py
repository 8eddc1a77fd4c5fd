"""The OpenAI Agents SDK keeping its state in a conversation (``conversation_id``, and its
OpenAIConversationsSession) over several tool-using turns, on an emulated and a native provider, through
gunicorn; the scripted model of ``tests/scripted_model.py`` drives the tools.
"""

from __future__ import annotations

import openai
import pytest

from tests.test_real_clients import BOTH, PROVIDERS, _agents_run

provider_kinds = pytest.mark.parametrize("provider", PROVIDERS)


def _conversation(gateway_url: str, provider: str) -> tuple[str, openai.OpenAI]:
    client = openai.OpenAI(
        base_url=gateway_url + "/v1", api_key="sk-agents", max_retries=0, _strict_response_validation=True
    )
    return client.conversations.create().id, client


@pytest.mark.slow
@provider_kinds
def test_agents_sdk_turns_on_one_conversation(scripted_gateway, scripted, provider):
    from agents import Runner

    conv_id, client = _conversation(scripted_gateway.url, provider)
    questions = ["What is the weather and the time?", "And tomorrow?", "parallel: and next week?"]

    async def steps(agent):
        return [await Runner.run(agent, q, conversation_id=conv_id) for q in questions]

    try:
        results = _agents_run(scripted_gateway.url, provider, steps)
        assert [r.final_output for r in results] == [f"Answer to '{q}': {BOTH}" for q in questions]
        # Every model call continued the conversation: the provider saw the earlier turns each time.
        items = list(client.conversations.items.list(conv_id, order="asc", limit=100))
        users = [i.content[0].text for i in items if i.type == "message" and i.role == "user"]
        assert users == questions
        calls = [i for i in items if i.type == "function_call"]
        outputs = [i for i in items if i.type == "function_call_output"]
        assert len(calls) == len(outputs) == 6 and {c.call_id for c in calls} == {o.call_id for o in outputs}
        answers = [i.content[0].text for i in items if i.type == "message" and i.role == "assistant"]
        assert answers == [r.final_output for r in results]
        for result in results:
            for raw in result.raw_responses:
                assert client.responses.retrieve(raw.response_id).conversation.id == conv_id
    finally:
        client.close()


@pytest.mark.slow
@provider_kinds
def test_agents_sdk_conversations_session(scripted_gateway, scripted, provider):
    from agents import Runner
    from agents.memory import OpenAIConversationsSession

    async def steps(agent):
        # The session creates its conversation through the same client the agent's model uses.
        session = OpenAIConversationsSession(openai_client=agent.model._client)
        first = await Runner.run(agent, "What is the weather and the time?", session=session)
        second = await Runner.run(agent, "And tomorrow?", session=session)
        items = await session.get_items()
        return first, second, items

    first, second, items = _agents_run(scripted_gateway.url, provider, steps)
    assert first.final_output == f"Answer to 'What is the weather and the time?': {BOTH}"
    assert second.final_output == f"Answer to 'And tomorrow?': {BOTH}"
    assert [i.get("role") for i in items if i.get("type", "message") == "message"].count("user") == 2

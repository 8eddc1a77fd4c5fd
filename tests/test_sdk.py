"""The official openai SDK, unchanged, through the gateway under gunicorn, against the fake provider."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import KEY


@pytest.fixture
def sdk(gateway, make_sdk):
    return make_sdk(gateway.url + "/v1")


def test_create_returns_the_providers_response(sdk, fake):
    resp = sdk.responses.create(model="gpt-4o-mini", input="hello there")
    assert resp.id.startswith("resp_")
    assert resp.output_text == "Echo 1: hello there"
    assert resp.usage.total_tokens > 0
    assert fake.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"


def test_create_stream_yields_every_event_in_order(sdk):
    events = list(sdk.responses.create(model="gpt-4o-mini", input="stream me", stream=True))
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Echo 1: stream me"


def test_stream_helper_final_response(sdk):
    with sdk.responses.stream(model="gpt-4o-mini", input="helper") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Echo 1: helper"


def test_retrieve_and_delete(sdk):
    created = sdk.responses.create(model="gpt-4o-mini", input="keep me")
    assert sdk.responses.retrieve(created.id).output_text == created.output_text
    assert sdk.responses.delete(created.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(created.id)


def test_input_items_auto_pagination(sdk):
    items = [{"role": "user", "content": f"message {i}"} for i in range(7)]
    created = sdk.responses.create(model="gpt-4o-mini", input=items)
    page = sdk.responses.input_items.list(created.id, limit=3, order="asc")
    listed = list(page)  # follows has_more/after across three pages
    assert [i.content[0].text if hasattr(i.content[0], "text") else i.content for i in listed] == [
        f"message {i}" for i in range(7)
    ]
    assert len({i.id for i in listed}) == 7


def test_previous_response_id_chain(sdk):
    first = sdk.responses.create(model="gpt-4o-mini", input="one")
    second = sdk.responses.create(model="gpt-4o-mini", input="two", previous_response_id=first.id)
    third = sdk.responses.create(model="gpt-4o-mini", input="three", previous_response_id=second.id)
    assert third.output_text == "Echo 3: three"
    assert third.previous_response_id == second.id


def test_provider_errors_reach_the_sdk_as_its_exceptions(sdk):
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.create(model="gpt-4o-mini", input="x", previous_response_id="resp_missing")
    assert info.value.code == "previous_response_not_found"

"""Stored responses through the API: owned by their key, served back, deleted, continued across providers."""

from __future__ import annotations

import json

import pytest
import requests
from click.testing import CliRunner

from gateway import create_app
from gateway.auth import key_digest
from gateway.cli import main as cli
from gateway.services import EXTENSION
from tests.conftest import Gunicorn

A = {"Authorization": "Bearer sk-tenant-a", "x-portkey-provider": "openai"}
B = {"Authorization": "Bearer sk-tenant-b", "x-portkey-provider": "openai"}


def _create(client, headers, **body):
    resp = client.post("/v1/responses", json={"model": "m", "input": "hi", **body}, headers=headers)
    assert resp.status_code == 200, resp.json
    return resp.json


@pytest.fixture
def store(app):
    return app.extensions[EXTENSION].store


def test_created_response_is_recorded_with_its_items(client, store):
    created = _create(client, A, input=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}])
    record = store.get(_tenant(client, A), created["id"])
    assert record.provider == "openai" and record.mode == "native"
    page, _ = store.input_items(record.tenant, created["id"], order="asc")
    assert [i["content"] for i in page] == ["one", "two"]
    assert all(i["id"].startswith("msg_") for i in page)


def _tenant(client, headers):
    return client.application.extensions[EXTENSION].auth.caller(headers).tenant


def test_keys_are_not_stored_in_clear(client, store):
    _create(client, A)
    with store.engine.connect() as conn:
        dump = " ".join(
            str(row)
            for table in ("gw_responses", "gw_items", "gw_meta")
            for row in conn.exec_driver_sql(f"SELECT * FROM {table}")
        )
    assert "sk-tenant-a" not in dump


def test_another_key_gets_the_same_404_as_a_missing_id(client, fake):
    created = _create(client, A)
    theirs = client.get(f"/v1/responses/{created['id']}", headers=B)
    missing = client.get("/v1/responses/resp_neverexisted", headers=B)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json["error"] == {**missing.json["error"], "message": theirs.json["error"]["message"]}
    assert theirs.json["error"]["message"] == f"Response with id '{created['id']}' not found."
    # Nor by a header (issue 21 item 11): the provider is asked about both, and the gateway marks both.
    assert sorted(theirs.headers.keys()) == sorted(missing.headers.keys())
    assert theirs.headers["x-portkey-provider"] == missing.headers["x-portkey-provider"] == "openai"
    for path in ("/input_items", "/cancel"):
        method = client.post if path == "/cancel" else client.get
        foreign, none = (
            method(f"/v1/responses/{created['id']}{path}", headers=B),
            method(f"/v1/responses/x{path}", headers=B),
        )
        assert foreign.status_code == 404 and sorted(foreign.headers.keys()) == sorted(none.headers.keys()), path
    assert client.delete(f"/v1/responses/{created['id']}", headers=B).status_code == 404
    assert client.get(f"/v1/responses/{created['id']}", headers=A).status_code == 200  # untouched


def test_previous_response_of_another_key_is_400_and_never_sent(client, fake):
    created = _create(client, A)
    sent = len(fake.requests)
    resp = client.post(
        "/v1/responses", json={"model": "m", "input": "x", "previous_response_id": created["id"]}, headers=B
    )
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "previous_response_not_found"
    assert resp.json["error"]["param"] == "previous_response_id"
    assert len(fake.requests) == sent


def test_reads_need_no_provider_header_for_a_recorded_response(client):
    created = _create(client, A)
    bare = {"Authorization": A["Authorization"]}
    assert client.get(f"/v1/responses/{created['id']}", headers=bare).json["id"] == created["id"]
    assert client.get(f"/v1/responses/{created['id']}/input_items", headers=bare).status_code == 200
    assert client.delete(f"/v1/responses/{created['id']}", headers=bare).status_code == 200


def test_delete_removes_it_at_the_provider_and_in_the_store(client, store, fake):
    first = _create(client, A)
    second = _create(client, A, previous_response_id=first["id"])
    assert client.delete(f"/v1/responses/{first['id']}", headers=A).status_code == 200
    assert first["id"] not in fake.responses
    assert store.get(_tenant(client, A), first["id"]) is None
    assert client.get(f"/v1/responses/{first['id']}", headers=A).status_code == 404
    assert client.get(f"/v1/responses/{second['id']}", headers=A).status_code == 200


@pytest.mark.slow
def test_store_false_keeps_nothing(client, store):
    before = store.count()
    _create(client, A, store=False)
    assert store.count() == before


def test_gateway_keys_never_reach_unknown_ids_at_the_provider(settings, fake):
    """Two gateway keys share the operator's provider credentials: the provider cannot tell them apart."""
    keys = {
        name: {"digest": key_digest(name), "providers": {"openai": {"api_key": "sk-shared"}}}
        for name in ("gw-a", "gw-b")
    }
    client = create_app({**settings, "keys": keys}).test_client()
    created = _create(client, {"x-portkey-api-key": "gw-a", "x-portkey-provider": "openai"})
    sent = len(fake.requests)
    resp = client.get(f"/v1/responses/{created['id']}", headers={"x-portkey-api-key": "gw-b"})
    assert resp.status_code == 404 and len(fake.requests) == sent


def test_switching_provider_inlines_the_history(settings, fake):
    settings["providers"]["other"] = {"base_url": fake.url, "api": "responses"}
    client = create_app(settings).test_client()
    first = _create(client, A, input="first question")
    second = _create(client, {**A, "x-portkey-provider": "other"}, input="second", previous_response_id=first["id"])
    sent = fake.requests[-1]["body"]
    assert "previous_response_id" not in sent
    assert [i.get("role") for i in sent["input"]] == ["user", "assistant", "user"]
    assert sent["input"][1]["content"][0]["text"] == "Echo 1: first question"
    assert second["previous_response_id"] == first["id"]
    # and back: turn 3 on the first provider sees turns 1 and 2 through the store
    _create(client, A, input="third", previous_response_id=second["id"])
    assert len(fake.requests[-1]["body"]["input"]) == 5


def test_purge_command(app, store):
    client = app.test_client()
    _create(client, A)
    runner = CliRunner()
    result = runner.invoke(cli, ["purge", "--older-than", "0s"], obj=_script_info(app))
    assert result.exit_code == 0, result.output
    assert "purged 1 responses" in result.output
    assert store.count() == 0
    bad = runner.invoke(cli, ["purge", "--older-than", "soon"], obj=_script_info(app))
    assert bad.exit_code != 0 and "not an age" in bad.output


def _script_info(app):
    from flask.cli import ScriptInfo

    return ScriptInfo(create_app=lambda: app)


def test_streamed_response_is_recorded_before_the_stream_ends(gateway):
    body = {"model": "m", "input": "stream and read", "stream": True}
    with requests.post(gateway.url + "/v1/responses", json=body, headers=A, stream=True, timeout=30) as resp:
        for line in resp.iter_lines():
            if line.startswith(b"data: ") and b'"response.completed"' in line:
                rid = json.loads(line[6:])["response"]["id"]
                # The stream has not ended yet; the record must already be there, on any worker.
                items = requests.get(
                    f"{gateway.url}/v1/responses/{rid}/input_items",
                    headers={"Authorization": A["Authorization"]},
                    timeout=10,
                )
                assert items.status_code == 200
                break
        else:
            pytest.fail("no response.completed event")


@pytest.mark.slow
def test_two_gateways_share_one_postgresql_store(fake, pg_schema, make_sdk):
    keys = {
        "GATEWAY_KEYS__TEAM__DIGEST": key_digest("gw-team"),
        "GATEWAY_KEYS__TEAM__PROVIDERS__OPENAI__API_KEY": "sk-team",
    }
    env = {"GATEWAY_PROVIDERS__OPENAI__BASE_URL": fake.url, "GATEWAY_STORE_URL": pg_schema, **keys}
    one, two = Gunicorn(env, workers=1, threads=4), Gunicorn(env, workers=1, threads=4)
    try:
        sdks = [make_sdk(g.url + "/v1", api_key="gw-team") for g in (one, two)]
        first = sdks[0].responses.create(model="m", input="start on one")
        second = sdks[1].responses.create(model="m", input="continue on two", previous_response_id=first.id)
        third = sdks[0].responses.create(model="m", input="back on one", previous_response_id=second.id)
        assert third.output_text == "Echo 3: back on one"
        # Each reads what the other wrote; gateway keys are never forwarded for ids the store lacks.
        bare_two = make_sdk(two.url + "/v1", api_key="gw-team", provider=None)
        bare_one = make_sdk(one.url + "/v1", api_key="gw-team", provider=None)
        assert bare_two.responses.retrieve(first.id).id == first.id
        assert bare_one.responses.retrieve(second.id).id == second.id
    finally:
        one.stop()
        two.stop()

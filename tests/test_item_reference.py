"""``item_reference`` input items: resolved from the caller's own stored items, for emulated providers and
for history inlined on a provider switch; another tenant's item or an unknown id is a 400 naming ``input[i]``.

The AI SDK sends a reference (with store on) for every earlier assistant item that has an id.
"""

from __future__ import annotations

import openai
import pytest
import sqlalchemy as sa

from gateway import create_app
from gateway.auth import key_digest
from gateway.services import EXTENSION
from gateway.store import Store, input_items_of
from gateway.store.tables import OBSOLETE_INDEXES, metadata
from tests import strict_types as strict
from tests.conftest import close_app

A = {"Authorization": "Bearer sk-tenant-a", "x-portkey-provider": "fakechat"}
B = {"Authorization": "Bearer sk-tenant-b", "x-portkey-provider": "fakechat"}
NATIVE = {**A, "x-portkey-provider": "openai"}


def ref(item_id: str) -> dict:
    return {"type": "item_reference", "id": item_id}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# ------------------------------------------------------------------------------------------ the store
@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.migrate()
    yield s
    s.dispose()


def _record(store, rid, *, tenant="t1", provider="openai", inputs=(), output_text=None):
    output = []
    if output_text is not None:
        output.append(
            {
                "type": "message",
                "id": f"msg_out_{rid}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": output_text, "annotations": []}],
            }
        )
    response = {"id": rid, "object": "response", "status": "completed", "model": "m", "output": output}
    store.record(tenant=tenant, provider=provider, mode="native", response=response, input_items=list(inputs))


def test_items_by_id_finds_the_tenants_items_of_any_response(store):
    asked = input_items_of([{"id": "msg_in", "role": "user", "content": "question"}])
    _record(store, "resp_1", inputs=asked, output_text="answer")
    _record(store, "resp_other", tenant="t2", inputs=input_items_of([{"id": "msg_theirs", **user("x")}]))

    found = store.items_by_id("t1", ["msg_out_resp_1", "msg_in", "msg_theirs", "msg_never"])
    assert set(found) == {"msg_out_resp_1", "msg_in", "msg_theirs"}
    assert found["msg_theirs"] is None  # another tenant's: known, never read
    # Output items keep their id and status and name the provider that made them; input items come back
    # as plain input, as a history would send them again.
    assert found["msg_out_resp_1"].item["content"][0]["text"] == "answer"
    assert found["msg_out_resp_1"].item["id"] == "msg_out_resp_1"
    assert found["msg_out_resp_1"].made_by == "openai"
    assert found["msg_in"].item == {"type": "message", "role": "user", "content": "question"}
    assert found["msg_in"].made_by is None
    assert store.items_by_id("t2", ["msg_out_resp_1", "msg_in"]) == {"msg_out_resp_1": None, "msg_in": None}
    assert store.items_by_id("t1", []) == {}


def test_an_item_stored_again_is_answered_from_its_output_row(store):
    _record(store, "resp_1", output_text="the original")
    echoed = {**store.items_by_id("t1", ["msg_out_resp_1"])["msg_out_resp_1"].item}
    echoed["content"] = [{"type": "output_text", "text": "edited by the caller", "annotations": []}]
    for n in range(2, 5):
        _record(store, f"resp_{n}", provider="other", inputs=[echoed])
    found = store.items_by_id("t1", ["msg_out_resp_1"])["msg_out_resp_1"]
    assert found.item["content"][0]["text"] == "the original" and found.made_by == "openai"


def test_many_references_are_read_in_bounded_statements(store):
    inputs = input_items_of([{"id": f"msg_{n}", **user(str(n))} for n in range(2500)])
    _record(store, "resp_big", inputs=inputs)
    found = store.items_by_id("t1", [f"msg_{n}" for n in range(2500)] + ["msg_0"])
    assert len(found) == 2500 and found["msg_2499"].item["content"] == "2499"


def _indexes(engine) -> dict[str, list[str]]:
    return {ix["name"]: ix["column_names"] for ix in sa.inspect(engine).get_indexes("gw_items")}


def test_migrate_adds_the_item_index_to_an_existing_store_and_drops_the_old_one(store_url):
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:  # a store made by the previous version
        metadata.create_all(conn)
        conn.execute(sa.text("DROP INDEX gw_items_by_item_id"))
        conn.execute(sa.text("CREATE INDEX gw_items_item_id ON gw_items (response_id, item_id)"))
    assert "gw_items_by_item_id" not in _indexes(engine)
    s = Store(store_url)
    s.migrate()
    s.migrate()  # and again, as every start-up does
    s.dispose()
    indexes = _indexes(engine)
    assert indexes["gw_items_by_item_id"] == ["item_id", "response_id"]
    assert not set(OBSOLETE_INDEXES) & set(indexes)
    engine.dispose()


def test_the_lookup_searches_the_index(store):
    from gateway.store import _ITEMS_BY_ID

    _record(store, "resp_1", output_text="answer")
    with store.engine.connect() as conn:
        query = _ITEMS_BY_ID.params(tenant="t1", ids=["msg_out_resp_1"])
        sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "postgresql":
            # An empty table is cheapest to scan: forbid scans to see that the index serves the query.
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = " ".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql))
            assert "gw_items_by_item_id" in plan
        else:
            plan = " ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "INDEX gw_items_by_item_id" in plan and "SCAN gw_items" not in plan


# ------------------------------------------------------------------------------------------ the relay
@pytest.fixture
def app(settings, store_url):
    settings["providers"]["other"] = {"base_url": settings["providers"]["openai"]["base_url"], "api": "responses"}
    settings["keys"] = {
        name: {"digest": key_digest(name), "providers": {"openai": {"api_key": "sk-shared"}}}
        for name in ("gw-a", "gw-b")
    }
    app = create_app({**settings, "store_url": store_url})
    yield app
    close_app(app)


@pytest.fixture
def statements(app):
    """The SQL statements the store runs, from the moment the test asks."""
    seen: list[str] = []

    def listen(conn, cursor, statement, *args):
        seen.append(statement)

    engine = app.extensions[EXTENSION].store.engine
    sa.event.listen(engine, "before_cursor_execute", listen)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", listen)


def _create(client, headers, **body):
    resp = client.post("/v1/responses", json={"model": "m", **body}, headers=headers)
    assert resp.status_code == 200, resp.json
    return resp.json


def _listed(client, headers, response_id):
    resp = client.get(f"/v1/responses/{response_id}/input_items", query_string={"order": "asc"}, headers=headers)
    assert resp.status_code == 200, resp.json
    strict.items_page(resp.json)
    return resp.json["data"]


def _counts(app) -> tuple[int, int]:
    with app.extensions[EXTENSION].store.engine.connect() as conn:
        return tuple(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in ("gw_responses", "gw_items"))


def test_emulated_provider_gets_the_referenced_items(client, fake):
    first = _create(client, A, input="What is the weather?")
    answer_id = first["output"][0]["id"]
    question_id = _listed(client, A, first["id"])[0]["id"]
    second = _create(client, A, input=[ref(question_id), ref(answer_id), user("And tomorrow?")])
    assert fake.requests[-1]["body"]["messages"] == [
        {"role": "user", "content": "What is the weather?"},
        {"role": "assistant", "content": "Echo 1: What is the weather?"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert second["output"][0]["content"][0]["text"] == "Echo 2: And tomorrow?"
    # input_items lists real items under the ids they were referred to by, never a reference.
    listed = _listed(client, A, second["id"])
    assert [i["id"] for i in listed[:2]] == [question_id, answer_id]
    assert [i["type"] for i in listed] == ["message"] * 3
    assert listed[1]["content"][0] == {**first["output"][0]["content"][0], "type": "output_text"}


def test_a_reference_is_an_item_of_only_an_id(client, fake):
    first = _create(client, A, input="hi")
    _create(client, A, input=[{"id": first["output"][0]["id"]}, user("again")])
    assert fake.requests[-1]["body"]["messages"][0] == {"role": "assistant", "content": "Echo 1: hi"}


def test_referenced_tool_calls_and_outputs_make_a_tool_turn(client, fake):
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    first = _create(client, A, input="weather?", tools=tools)
    call = first["output"][0]
    assert call["type"] == "function_call"
    output = {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}
    second = _create(client, A, input=[user("weather?"), ref(call["id"]), output], tools=tools)
    sent = fake.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call["call_id"] and sent[2]["role"] == "tool"
    assert second["output"][0]["content"][0]["text"] == "Tool said: sunny"


@pytest.mark.parametrize("provider", ["fakechat", "openai"])
def test_another_tenants_item_is_a_400_like_an_unknown_one_and_nothing_is_kept(app, client, fake, provider):
    theirs = _create(client, A, input="secret")["output"][0]["id"]
    before, sent = _counts(app), len(fake.requests)
    b = {**B, "x-portkey-provider": provider}
    foreign = client.post("/v1/responses", json={"model": "m", "input": [user("hi"), ref(theirs)]}, headers=b)
    # Emulated: an id the store has never seen is the same 400 (native: see below).
    unknown = client.post("/v1/responses", json={"model": "m", "input": [user("hi"), ref("msg_nope")]}, headers=B)
    assert foreign.status_code == 400
    assert foreign.json["error"] == {
        "message": f"Item with id '{theirs}' not found.",
        "type": "invalid_request_error",
        "param": "input[1]",
        "code": "item_not_found",
    }
    assert unknown.status_code == 400
    assert unknown.json["error"] == {**foreign.json["error"], "message": "Item with id 'msg_nope' not found."}
    assert len(fake.requests) == sent
    assert _counts(app) == before


def test_a_reference_without_an_id_is_a_400(client):
    resp = client.post("/v1/responses", json={"model": "m", "input": [{"type": "item_reference"}]}, headers=A)
    assert resp.status_code == 400 and resp.json["error"]["param"] == "input[0].id"


def test_gateway_keys_never_send_an_unknown_reference_to_the_provider(client, fake):
    """Two gateway keys share the provider credentials: the provider could not tell whose item it is."""
    a = {"x-portkey-api-key": "gw-a", "x-portkey-provider": "openai"}
    theirs = _create(client, a, input="mine")["output"][0]["id"]
    sent = len(fake.requests)
    for item_id in (theirs, "msg_unknown"):
        resp = client.post(
            "/v1/responses",
            json={"model": "m", "input": [ref(item_id)]},
            headers={"x-portkey-api-key": "gw-b", "x-portkey-provider": "openai"},
        )
        assert resp.status_code == 400 and resp.json["error"]["param"] == "input[0]"
    assert len(fake.requests) == sent


def test_native_provider_gets_its_own_items_by_reference_and_others_inlined(app, client, fake):
    made_here = _create(client, NATIVE, input="native turn")["output"][0]["id"]
    made_elsewhere = _create(client, A, input="emulated turn")["output"][0]["id"]
    created = _create(client, NATIVE, input=[ref(made_here), ref(made_elsewhere), ref("msg_provider_only")])
    sent = fake.requests[-1]["body"]["input"]
    assert sent[0] == ref(made_here) and sent[2] == ref("msg_provider_only")
    assert sent[1]["role"] == "assistant" and sent[1]["content"][0]["text"] == "Echo 1: emulated turn"
    # The store keeps real items where it could resolve them; an item only the provider knows stays a reference.
    store = app.extensions[EXTENSION].store
    tenant = app.extensions[EXTENSION].auth.caller(NATIVE).tenant
    kept, _ = store.input_items(tenant, created["id"], order="asc")
    assert [i["type"] for i in kept] == ["message", "message", "item_reference"]
    assert [i["id"] for i in kept] == [made_here, made_elsewhere, "msg_provider_only"]


def test_switching_provider_inlines_the_referenced_items(client, fake):
    first = _create(client, A, input="first question")
    answer = first["output"][0]
    second = _create(
        client,
        {**NATIVE, "x-portkey-provider": "other"},
        input=[ref(answer["id"]), user("second")],
        previous_response_id=first["id"],
    )
    sent = fake.requests[-1]["body"]
    assert "previous_response_id" not in sent
    assert [i.get("type") for i in sent["input"]] == ["message"] * 4
    assert sent["input"][2] == {k: v for k, v in answer.items()}  # the emulated answer, as it was made
    assert second["previous_response_id"] == first["id"]
    # An unknown reference cannot be inlined, not even for a caller's own key.
    resp = client.post(
        "/v1/responses",
        json={"model": "m", "input": [user("x"), ref("msg_nope")], "previous_response_id": first["id"]},
        headers={**NATIVE, "x-portkey-provider": "other"},
    )
    assert resp.status_code == 400 and resp.json["error"]["param"] == "input[1]"


def test_requests_without_references_never_look_items_up(client, statements):
    first = _create(client, A, input="hi")
    _create(client, A, input=[user("again")], previous_response_id=first["id"])
    lookups = [s for s in statements if "row_number" in s.lower()]
    assert lookups == []
    _create(client, A, input=[ref(first["output"][0]["id"]), ref(first["output"][0]["id"]), user("more")])
    assert len([s for s in statements if "row_number" in s.lower()]) == 1


def test_a_store_that_cannot_answer_the_lookup_is_a_503_and_nothing_is_sent(app, client, fake, monkeypatch):
    answer = _create(client, A, input="hi")["output"][0]["id"]
    engine = app.extensions[EXTENSION].store.engine

    def down(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(engine, "connect", down)
    sent = len(fake.requests)
    resp = client.post("/v1/responses", json={"model": "m", "input": [ref(answer), user("more")]}, headers=A)
    assert resp.status_code == 503 and resp.json["error"]["code"] == "store_unavailable"
    assert len(fake.requests) == sent


# ------------------------------------------------------------------------------------------ the openai SDK
@pytest.fixture
def strict_sdk(gateway):
    """openai-python under gunicorn, validating every answer against its types."""
    clients = []

    def make(provider: str, api_key: str = "sk-item-reference-a") -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=gateway.url + "/v1",
            api_key=api_key,
            max_retries=0,
            default_headers={"x-portkey-provider": provider},
            _strict_response_validation=True,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_sdk_refers_to_earlier_items_on_an_emulated_provider_and_across_a_switch(strict_sdk, fake, stream):
    chat, native = strict_sdk("fakechat"), strict_sdk("openai")

    def create(client, **params):
        if not stream:
            return client.responses.create(model="m", **params)
        with client.responses.stream(model="m", **params) as events:
            return events.get_final_response()

    first = create(chat, input="What is the weather?")
    question = next(iter(chat.responses.input_items.list(first.id))).id
    answer = first.output[0].id
    second = create(chat, input=[ref(question), ref(answer), user("And tomorrow?")])
    assert second.output_text == "Echo 2: And tomorrow?"
    listed = list(chat.responses.input_items.list(second.id, order="asc"))
    assert [(i.type, i.id, i.role) for i in listed[:2]] == [
        ("message", question, "user"),
        ("message", answer, "assistant"),
    ]
    assert listed[1].content[0].text == "Echo 1: What is the weather?"

    # On to a native provider that never saw the conversation: history and referenced items are inlined.
    third = create(native, input=[ref(second.output[0].id), user("And the day after?")], previous_response_id=second.id)
    sent = fake.requests[-1]["body"]["input"]
    assert all(i.get("type") != "item_reference" for i in sent)
    # second's turn (its three input items, its answer), then this turn: the referenced answer and the question.
    assert [i["role"] for i in sent] == ["user", "assistant", "user", "assistant", "assistant", "user"]
    assert sent[4]["id"] == second.output[0].id and sent[4]["content"][0]["text"] == "Echo 2: And tomorrow?"
    if not stream:  # a relayed native stream keeps the provider's null (noted in the report on issue 11)
        assert third.previous_response_id == second.id
    assert third.output_text == "Echo 1: And the day after?"


def test_openai_sdk_gets_a_400_naming_the_input_for_foreign_and_unknown_items(strict_sdk, gateway_env):
    mine = strict_sdk("fakechat").responses.create(model="m", input="private")
    store = Store(gateway_env["GATEWAY_STORE_URL"])
    try:
        before = _store_counts(store)
        for provider, api_key, item_id in [
            ("fakechat", "sk-item-reference-b", mine.output[0].id),
            ("openai", "sk-item-reference-b", mine.output[0].id),
            ("fakechat", "sk-item-reference-a", "msg_never_made"),
        ]:
            with pytest.raises(openai.BadRequestError) as info:
                strict_sdk(provider, api_key).responses.create(
                    model="m", input=[user("hi"), user("there"), ref(item_id)]
                )
            assert info.value.param == "input[2]" and info.value.code == "item_not_found"
            assert info.value.body["message"] == f"Item with id '{item_id}' not found."
        assert _store_counts(store) == before
    finally:
        store.dispose()


def _store_counts(store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return tuple(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in ("gw_responses", "gw_items"))


def test_references_that_expand_past_the_body_limit_are_400_before_anything_is_written(settings, fake):
    # issue 21 item 5: 700 references to one 1 MB item wrote 700 MB. The limit here is 200 kB.
    from gateway import create_app
    from gateway.services import EXTENSION
    from tests.conftest import KEY, close_app

    app = create_app({**settings, "max_body_bytes": 200_000})
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
        big = "x" * 60_000
        made = client.post("/v1/responses", json={"model": "m", "input": big}, headers=headers).json
        store = app.extensions[EXTENSION].store
        item_id = store.input_items(made and store.owner_of(made["id"]), made["id"])[0][0]["id"]
        before, sent = store.count(), len(fake.requests)
        refs = [{"type": "item_reference", "id": item_id}] * 5  # 300 kB once expanded
        resp = client.post("/v1/responses", json={"model": "m", "input": refs}, headers=headers)
        assert resp.status_code == 400 and resp.json["error"]["code"] == "input_too_large"
        assert resp.json["error"]["param"] == "input"
        assert store.count() == before and len(fake.requests) == sent
        ok = client.post("/v1/responses", json={"model": "m", "input": refs[:2]}, headers=headers)
        assert ok.status_code == 200  # 120 kB: under the limit
    finally:
        close_app(app)

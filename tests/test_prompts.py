"""Prompt templates, the gateway's own for every provider: managed under the admin key at /v1/gateway/prompts
(or read from prompt files), and expanded into a create's instructions and input before it is routed.
"""

from __future__ import annotations

import json

import httpx2
import openai
import pytest
from openai._models import validate_type
from openai.types.responses import Response, ResponseStreamEvent

from gateway import create_app
from gateway.auth import key_digest
from gateway.config import SettingsError
from tests import strict_types as strict
from tests.conftest import KEY, close_app

ADMIN_KEY = "gw-admin-test-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
IMAGE = {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"}
# A template with a string variable in its instructions, a part variable as a whole message, and a string
# variable with a default in a text part.
TEMPLATE = {
    "instructions": "You are {{persona}}.",
    "input": [
        {"role": "user", "content": "{{photo}}"},
        {"role": "user", "content": [{"type": "input_text", "text": "Describe it for {{ audience }}."}]},
    ],
    "variables": {"audience": "everyone"},
}
VARIABLES = {"persona": "a museum guide", "photo": IMAGE}


@pytest.fixture
def settings(settings):
    return {**settings, "admin_key": key_digest(ADMIN_KEY)}


def _make(client, template: dict = TEMPLATE) -> dict:
    made = client.post("/v1/gateway/prompts", json=template, headers=ADMIN)
    assert made.status_code == 200, made.json
    return made.json


def _sent(fake) -> dict:
    return fake.requests[-1]["body"]


# ---------------------------------------------------------------------------------------------- the admin API
def test_create_version_get_list_delete(fake, settings, store_url):
    app = create_app({**settings, "store_url": store_url})
    try:
        client = app.test_client()
        first = _make(client)
        assert first["id"].startswith("pmpt_") and first["version"] == "1" and first["object"] == "prompt"
        assert first["instructions"] == TEMPLATE["instructions"] and first["input"] == TEMPLATE["input"]
        assert first["variables"] == {"audience": "everyone"} and first["source"] == "store"

        second = client.post(f"/v1/gateway/prompts/{first['id']}", json={"input": "Hello {{name}}"}, headers=ADMIN)
        assert second.status_code == 200
        assert second.json["version"] == "2" and second.json["id"] == first["id"]
        assert second.json["input"] == [{"role": "user", "content": "Hello {{name}}"}]  # a string is one message
        third = client.post(f"/v1/gateway/prompts/{first['id']}", json={"instructions": "Three."}, headers=ADMIN).json
        assert third["version"] == "3"

        assert client.get(f"/v1/gateway/prompts/{first['id']}", headers=ADMIN).json == third
        assert client.get(f"/v1/gateway/prompts/{first['id']}?version=1", headers=ADMIN).json == first
        missing = client.get(f"/v1/gateway/prompts/{first['id']}?version=7", headers=ADMIN)
        assert missing.status_code == 404 and "latest is '3'" in missing.json["error"]["message"]

        other = _make(client, {"instructions": "Another."})
        page = client.get("/v1/gateway/prompts?limit=1", headers=ADMIN).json
        ids = sorted([first["id"], other["id"]])
        assert page["object"] == "list" and [p["id"] for p in page["data"]] == ids[:1] and page["has_more"]
        rest = client.get(f"/v1/gateway/prompts?after={ids[0]}", headers=ADMIN).json
        assert [p["id"] for p in rest["data"]] == ids[1:] and not rest["has_more"]
        listed = {p["id"]: p["version"] for p in client.get("/v1/gateway/prompts", headers=ADMIN).json["data"]}
        assert listed == {first["id"]: "3", other["id"]: "1"}  # the latest version of each

        gone = client.delete(f"/v1/gateway/prompts/{first['id']}", headers=ADMIN)
        assert gone.json == {"id": first["id"], "object": "prompt.deleted", "deleted": True}
        for method in ("get", "delete"):
            assert getattr(client, method)(f"/v1/gateway/prompts/{first['id']}", headers=ADMIN).status_code == 404
        again = client.post(f"/v1/gateway/prompts/{first['id']}", json={"instructions": "x"}, headers=ADMIN)
        assert (
            again.status_code == 404 and again.json["error"]["message"] == f"Prompt with id '{first['id']}' not found."
        )
    finally:
        close_app(app)


def test_a_stored_prompt_expands_on_postgresql_too(fake, settings, pg_schema):
    import sqlalchemy as sa

    from gateway.store.tables import metadata

    engine = sa.create_engine(pg_schema)
    metadata.drop_all(engine)
    engine.dispose()
    app = create_app({**settings, "store_url": pg_schema})
    try:
        client = app.test_client()
        made = _make(client)
        resp = client.post(
            "/v1/responses",
            json={"model": "m", "prompt": {"id": made["id"], "variables": VARIABLES}},
            headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"},
        )
        assert resp.status_code == 200, resp.json
        assert _sent(fake)["messages"][0] == {"role": "system", "content": "You are a museum guide."}
        assert resp.json["prompt"] == {"id": made["id"], "variables": VARIABLES}
    finally:
        close_app(app)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, None),
        ({"Authorization": "Bearer not-the-admin-key"}, 401, "invalid_api_key"),
        ({"Authorization": f"Bearer {KEY}"}, 401, "invalid_api_key"),  # a caller's key is not the admin's
        ({"x-portkey-api-key": ADMIN_KEY}, 200, None),
        (ADMIN, 200, None),
    ],
)
def test_the_admin_key_is_asked_for(client, headers, status, code):
    resp = client.get("/v1/gateway/prompts", headers=headers)
    assert resp.status_code == status
    if status == 401:
        assert resp.json["error"]["code"] == code and set(resp.json["error"]) == {"message", "type", "param", "code"}
        # Asked before the body is read: no key is a 401 whatever is sent.
        assert client.post("/v1/gateway/prompts", data=b"{", headers=headers).status_code == 401


def test_without_an_admin_key_the_admin_surface_is_not_there(fake, settings):
    app = create_app({k: v for k, v in settings.items() if k != "admin_key"})
    try:
        client = app.test_client()
        unknown = client.get("/v1/no-such-path")
        for method, path in (
            ("get", "/v1/gateway/prompts"),
            ("post", "/v1/gateway/prompts"),
            ("delete", "/v1/gateway/prompts/x"),
        ):
            resp = getattr(client, method)(path, headers=ADMIN)
            assert resp.status_code == 404 and resp.json == unknown.json  # indistinguishable from no such path
    finally:
        close_app(app)


def test_the_admin_key_setting_is_a_digest():
    with pytest.raises(SettingsError, match="admin_key"):
        create_app({"admin_key": ADMIN_KEY, "store_url": "sqlite://"})


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"instructions": 3}, "instructions", "invalid_value"),
        ({}, None, "invalid_value"),
        ({"instructions": "", "input": []}, None, "invalid_value"),
        ({"instructions": "x", "name": "typo"}, "name", "unknown_parameter"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", "invalid_value"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].type", "invalid_value"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content", "invalid_value"),
        ({"input": [{"role": "user", "content": ["text"]}]}, "input[0].content[0]", "invalid_value"),
        ({"input": ["hello"]}, "input[0]", "invalid_value"),
        ({"instructions": "x", "variables": ["a"]}, "variables", "invalid_value"),
        ({"instructions": "x", "variables": {"1st": "a"}}, "variables.1st", "invalid_value"),
        ({"instructions": "x", "variables": {"clip": {"type": "input_audio"}}}, "variables.clip", "invalid_value"),
        ({"instructions": "x", "variables": {"t": {"type": "input_text"}}}, "variables.t", "invalid_value"),
    ],
)
def test_bad_template_bodies_are_400_naming_the_field(client, body, param, code):
    for path in ("/v1/gateway/prompts", "/v1/gateway/prompts/" + _make(client)["id"]):
        resp = client.post(path, json=body, headers=ADMIN)
        assert resp.status_code == 400, resp.json
        assert (resp.json["error"]["param"], resp.json["error"]["code"]) == (param, code), resp.json


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "param"),
    [
        ("post", "/v1/gateway/prompts", b"{not json", 400, None),
        ("post", "/v1/gateway/prompts", b"[]", 400, None),
        ("get", "/v1/gateway/prompts/pmpt_x?version=two", None, 400, "version"),
        ("get", "/v1/gateway/prompts/pmpt_x?version=0", None, 400, "version"),
        ("get", "/v1/gateway/prompts/pmpt_x?verison=1", None, 400, "verison"),
        ("get", "/v1/gateway/prompts?limit=0", None, 400, "limit"),
        ("get", "/v1/gateway/prompts/pmpt_x", None, 404, None),
        ("delete", "/v1/gateway/prompts/pmpt_x", None, 404, None),
        ("get", "/v1/gateway/prompts/a%20b", None, 400, "prompt_id"),
    ],
)
def test_bad_requests_to_the_admin_api(client, method, path, data, status, param):
    kwargs = {"data": data, "content_type": "application/json"} if data is not None else {}
    resp = getattr(client, method)(path, headers=ADMIN, **kwargs)
    assert resp.status_code == status, resp.json
    assert resp.json["error"]["param"] == param and set(resp.json["error"]) == {"message", "type", "param", "code"}


# ---------------------------------------------------------------------------------------------- expansion
def _create(client, provider: str, **body):
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": provider}
    return client.post("/v1/responses", json={"model": "small", **body}, headers=headers)


def test_expansion_on_an_emulated_provider(client, fake):
    made = _make(client)
    prompt = {"id": made["id"], "variables": VARIABLES}
    resp = _create(client, "fakechat", prompt=prompt, instructions="Answer in French.", input="Be brief.")
    assert resp.status_code == 200, resp.json
    strict.response(resp.json)
    assert resp.json["prompt"] == prompt  # as the request gave it
    assert resp.json["instructions"] == "You are a museum guide.\n\nAnswer in French."  # the template's first
    sent = _sent(fake)
    assert "prompt" not in sent
    assert sent["messages"] == [
        {"role": "system", "content": "You are a museum guide.\n\nAnswer in French."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE["image_url"], "detail": "low"}}]},
        {"role": "user", "content": "Describe it for everyone."},  # the default
        {"role": "user", "content": "Be brief."},
    ]
    # The template's messages are this turn's input, kept and listed with it.
    items = client.get(
        f"/v1/responses/{resp.json['id']}/input_items?order=asc", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert [i["content"][0]["type"] for i in items.json["data"]] == ["input_image", "input_text", "input_text"]
    kept = client.get(f"/v1/responses/{resp.json['id']}", headers={"Authorization": f"Bearer {KEY}"})
    assert kept.json["prompt"] == prompt


def test_expansion_on_a_native_provider(client, fake):
    made = _make(client)
    prompt = {"id": made["id"], "version": "1", "variables": {**VARIABLES, "audience": "children"}}
    resp = _create(client, "openai", prompt=prompt, input=[{"role": "user", "content": "Be brief."}])
    assert resp.status_code == 200, resp.json
    validate_type(type_=Response, value=resp.json)  # the fake provider's answer is not the spec's whole one
    assert resp.json["prompt"] == prompt
    sent = _sent(fake)
    assert "prompt" not in sent  # the provider gets the template expanded, never the gateway's id
    assert sent["instructions"] == "You are a museum guide."
    assert sent["input"] == [
        {"role": "user", "content": [IMAGE]},
        {"role": "user", "content": [{"type": "input_text", "text": "Describe it for children."}]},
        {"role": "user", "content": "Be brief."},
    ]
    kept = client.get(f"/v1/responses/{resp.json['id']}", headers={"Authorization": f"Bearer {KEY}"})
    assert kept.json["prompt"] == prompt


@pytest.mark.parametrize("provider", ["fakechat", "openai"])
def test_streams_echo_the_prompt_from_the_first_event(client, fake, provider):
    made = _make(client, {"instructions": "Talk like {{who}}."})
    prompt = {"id": made["id"], "variables": {"who": "a pirate"}}
    resp = _create(client, provider, prompt=prompt, input="hi", stream=True)
    assert resp.status_code == 200
    events = strict.sse_events(resp.get_data(as_text=True))
    if provider == "fakechat":
        final = strict.stream(events)
    else:  # the fake provider's events, checked by type only: its Response is not the spec's whole one
        for event in events:
            validate_type(type_=ResponseStreamEvent, value=event)
        final = events[-1]["response"]
    assert events[0]["response"]["prompt"] == prompt and final["prompt"] == prompt
    assert final["instructions"] == "Talk like a pirate."
    sent = _sent(fake)
    assert "prompt" not in sent
    instructions = sent["messages"][0]["content"] if provider == "fakechat" else sent["instructions"]
    assert instructions == "Talk like a pirate."


@pytest.mark.parametrize("provider", ["fakechat", "openai"])
def test_a_missing_variable_is_400_naming_it(client, fake, provider):
    made = _make(client)
    resp = _create(client, provider, input="x", prompt={"id": made["id"], "variables": {"photo": IMAGE}})
    assert resp.status_code == 400
    assert resp.json["error"]["param"] == "prompt.variables.persona"
    assert "'persona'" in resp.json["error"]["message"]
    assert fake.requests == []  # refused before any provider is paid


@pytest.mark.parametrize(
    ("prompt", "param", "code"),
    [
        ({"variables": VARIABLES}, "prompt.id", "missing_required_parameter"),
        ({"id": 5}, "prompt.id", "invalid_value"),
        ({"id": "PID", "version": 2}, "prompt.version", "invalid_value"),
        ({"id": "PID", "version": "9"}, "prompt.version", "prompt_not_found"),
        ({"id": "PID", "variables": "persona"}, "prompt.variables", "invalid_value"),
        ({"id": "PID", "variables": {"persona": 3}}, "prompt.variables.persona", "invalid_value"),
        ({"id": "PID", "variables": {"persona": IMAGE, "photo": IMAGE}}, "prompt.variables.persona", "invalid_value"),
    ],
)
def test_bad_prompts_in_a_create(client, fake, prompt, param, code):
    made = _make(client)
    if prompt.get("id") == "PID":
        prompt = {**prompt, "id": made["id"]}
    resp = _create(client, "fakechat", input="x", prompt=prompt)
    assert resp.status_code == 400, resp.json
    assert (resp.json["error"]["param"], resp.json["error"]["code"]) == (param, code), resp.json
    assert fake.requests == []


def test_an_unknown_prompt_id(client, fake):
    foreign = {"id": "pmpt_made_at_openai", "version": "4", "variables": {"city": "Oslo"}}
    refused = _create(client, "fakechat", input="x", prompt=foreign)
    assert refused.status_code == 400
    assert (refused.json["error"]["param"], refused.json["error"]["code"]) == ("prompt.id", "prompt_not_found")
    assert fake.requests == []
    # A provider that keeps prompts of its own (stored_prompts in the catalogue) gets it as sent.
    passed = _create(client, "openai", input="x", prompt=foreign)
    assert passed.status_code == 200, passed.json
    assert _sent(fake)["prompt"] == foreign and _sent(fake)["input"] == "x"


def test_an_unknown_prompt_id_falls_back_to_a_provider_that_keeps_prompts(client, fake):
    config = {"strategy": {"mode": "fallback"}, "targets": [{"provider": "fakechat"}, {"provider": "openai"}]}
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-config": json.dumps(config)}
    foreign = {"id": "pmpt_made_at_openai"}
    resp = client.post("/v1/responses", json={"model": "m", "input": "x", "prompt": foreign}, headers=headers)
    assert resp.status_code == 200, resp.json
    assert resp.headers["x-portkey-provider"] == "openai" and _sent(fake)["prompt"] == foreign


class _Keeper:
    """What the background consumer passes the pipeline as a run's keeper: the id, and the final record."""

    def __init__(self, response_id: str):
        self.response_id = response_id
        self.kept: dict | None = None

    def take(self, response: dict, done) -> None:
        self.kept = response


def test_a_background_run_is_queued_as_sent_and_expanded_when_it_runs(app, client, fake):
    import sqlalchemy as sa

    from gateway import pipeline
    from gateway.auth import Caller
    from gateway.call import Call
    from gateway.observe import Trace
    from gateway.store.tables import runs

    made = _make(client)
    prompt = {"id": made["id"], "variables": VARIABLES}
    queued = _create(client, "fakechat", prompt=prompt, input="Hi.", background=True)
    assert queued.status_code == 200, queued.json
    assert queued.json["status"] == "queued" and queued.json["prompt"] == prompt
    assert fake.requests == []
    svc = app.extensions["gateway"]
    with svc.store.engine.connect() as conn:
        sealed = conn.execute(sa.select(runs.c.job).where(runs.c.response_id == queued.json["id"])).scalar_one()
    job = svc.background.open_job(queued.json["id"], sealed)
    assert job.body["prompt"] == prompt and "instructions" not in job.body  # expanded when it runs, not before

    # The run, as the consumer makes it: the same pipeline, with the run as its keeper.
    keeper = _Keeper(queued.json["id"])
    caller = Caller(tenant=svc.auth.caller({"Authorization": f"Bearer {KEY}"}).tenant, provider_key=KEY)
    call = Call(caller, job.headers, job.body, Trace(trace_id="t", method="POST", path="background"), keeper=keeper)
    reply, _ = pipeline.create(svc, call)
    events = [event.json() for event in reply.stream]
    assert events[0]["response"]["prompt"] == prompt and events[0]["response"]["id"] == queued.json["id"]
    assert keeper.kept["prompt"] == prompt and keeper.kept["status"] == "completed"
    assert _sent(fake)["messages"][0] == {"role": "system", "content": "You are a museum guide."}


# ---------------------------------------------------------------------------------------------- prompt files
PROMPT_TOML = """
[[prompts]]
id = "support"
instructions = "You answer for {{product}}."
variables = { product = "the gateway" }

[[prompts]]
id = "support"
version = 2
instructions = "You answer questions about {{product}}, briefly."
input = [{ role = "user", content = [{ type = "input_text", text = "My question is about {{topic}}." }] }]
variables = { product = "the gateway" }
"""


@pytest.fixture
def prompt_files(tmp_path):
    toml_file = tmp_path / "prompts.toml"
    toml_file.write_text(PROMPT_TOML)
    json_file = tmp_path / "more.json"
    json_file.write_text(json.dumps({"prompts": [{"id": "greeter", "input": "Say hello to {{name}}."}]}))
    return [str(toml_file), str(json_file)]


def test_prompt_files(fake, settings, prompt_files):
    app = create_app({**settings, "prompt_files": prompt_files})
    try:
        client = app.test_client()
        latest = client.get("/v1/gateway/prompts/support", headers=ADMIN).json
        assert latest["version"] == "2" and latest["source"] == "file"
        first = client.get("/v1/gateway/prompts/support?version=1", headers=ADMIN).json
        assert first["instructions"] == "You answer for {{product}}."
        stored = _make(client, {"instructions": "Stored."})
        listed = client.get("/v1/gateway/prompts", headers=ADMIN).json["data"]
        assert {p["id"]: p["source"] for p in listed} == {"support": "file", "greeter": "file", stored["id"]: "store"}

        for method, body in (("post", {"instructions": "x"}), ("delete", None)):
            resp = getattr(client, method)("/v1/gateway/prompts/support", json=body, headers=ADMIN)
            assert resp.status_code == 400 and resp.json["error"]["code"] == "prompt_in_file"
            assert "prompt_files" in resp.json["error"]["message"] and prompt_files[0] in resp.json["error"]["message"]

        resp = _create(client, "fakechat", input="Thanks.", prompt={"id": "support", "variables": {"topic": "keys"}})
        assert resp.status_code == 200, resp.json
        assert _sent(fake)["messages"] == [
            {"role": "system", "content": "You answer questions about the gateway, briefly."},
            {"role": "user", "content": "My question is about keys."},
            {"role": "user", "content": "Thanks."},
        ]
        old = _create(client, "openai", input="Hi.", prompt={"id": "support", "version": "1"})
        assert old.status_code == 200 and _sent(fake)["instructions"] == "You answer for the gateway."
        greeted = _create(client, "openai", prompt={"id": "greeter", "variables": {"name": "Ada"}})
        assert greeted.status_code == 200 and _sent(fake)["input"] == [{"role": "user", "content": "Say hello to Ada."}]
    finally:
        close_app(app)


@pytest.mark.parametrize(
    ("text", "name", "says"),
    [
        ("[[prompts]]\ninstructions = 'no id'\n", "p.toml", "prompts[0]: Missing required parameter: 'id'"),
        (
            "[[prompts]]\nid = 'a'\ninstructions = 'x'\nversion = 'two'\n",
            "p.toml",
            "prompts[0]: Invalid value for 'version'",
        ),
        ("[[prompts]]\nid = 'a'\ninstructions = 'x'\n[[prompts]]\nid = 'a'\ninput = 'y'\n", "p.toml", "defined twice"),
        ("[[prompts]]\nid = 'a'\ninstructions = 'x'\ntemperature = 1\n", "p.toml", "Unknown parameter: 'temperature'"),
        ("prompts = 'none'\n", "p.toml", "must hold `prompts`"),
        ("not = [toml", "p.toml", "not valid TOML"),
        ('{"prompts": [{"id": "a"}]}', "p.json", "needs instructions, input, or both"),
    ],
)
def test_mistakes_in_prompt_files_stop_the_start(tmp_path, text, name, says):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SettingsError) as caught:
        create_app({"store_url": "sqlite://", "prompt_files": [str(path)]})
    assert says in str(caught.value) and str(path) in str(caught.value)


def test_check_config_names_the_prompt_file_at_fault(tmp_path):
    from gateway.startup import StartupError, check

    missing = tmp_path / "missing.toml"
    with pytest.raises(StartupError) as caught:
        check({"GATEWAY_PROMPT_FILES": str(missing), "GATEWAY_STORE_URL": "sqlite://"}, store=False)
    assert caught.value.lines == [
        f"GATEWAY_PROMPT_FILES: {missing}: cannot read the prompt file: No such file or directory"
    ]


# ---------------------------------------------------------------------------------------------- the SDK
def test_the_openai_sdk_uses_gateway_prompts(app, fake):
    """``client.responses.create(prompt=...)`` as openai-python sends it, every answer checked strictly."""
    made = _make(app.test_client())
    http = httpx2.Client(transport=httpx2.WSGITransport(app=app))
    clients = []
    try:
        for provider in ("fakechat", "openai"):
            sdk = openai.OpenAI(
                base_url="http://gateway.test/v1",
                api_key=KEY,
                max_retries=0,
                http_client=http,
                default_headers={"x-portkey-provider": provider},
                _strict_response_validation=True,
            )
            clients.append(sdk)
            resp = sdk.responses.create(
                model="small", prompt={"id": made["id"], "variables": VARIABLES}, input="What is it?"
            )
            assert resp.prompt.id == made["id"] and resp.prompt.variables["persona"] == "a museum guide"
            assert resp.prompt.variables["photo"].image_url == IMAGE["image_url"]
            assert resp.output_text.endswith("What is it?")
            # The prompt alone (no input): the template's messages are the input.
            with sdk.responses.create(
                model="small", prompt={"id": made["id"], "variables": VARIABLES}, stream=True
            ) as stream:
                events = list(stream)
            final = events[-1].response
            assert [events[0].type, events[-1].type] == ["response.created", "response.completed"]
            assert events[0].response.prompt.id == made["id"] and final.prompt.id == made["id"]
            assert final.instructions == "You are a museum guide."
            with pytest.raises(openai.BadRequestError) as caught:
                sdk.responses.create(model="small", prompt={"id": made["id"]})
            assert caught.value.param == "prompt.variables.persona"
    finally:
        for sdk in clients:
            sdk.close()
        http.close()


def test_a_token_count_counts_the_template(client, fake):
    made = _make(client, {"instructions": "{{long}}", "input": [{"role": "user", "content": "hi"}]})
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"}
    plain = client.post("/v1/responses/input_tokens", json={"model": "small", "input": "hi"}, headers=headers)
    prompt = {"id": made["id"], "variables": {"long": "word " * 500}}
    counted = client.post("/v1/responses/input_tokens", json={"model": "small", "prompt": prompt}, headers=headers)
    assert counted.status_code == 200, counted.json
    assert counted.json["input_tokens"] > plain.json["input_tokens"] + 400

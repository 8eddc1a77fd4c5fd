"""Background responses through gunicorn with the openai SDK: created, polled, streamed, resumed, cancelled,
surviving a killed HTTP worker, failing cleanly when their consumer dies, and shared by two gateways on one
PostgreSQL and one Redis. Provider kinds: emulated (fakechat) and native (openai).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import KEY, Gunicorn

PROVIDERS = pytest.mark.parametrize("provider", ["fakechat", "openai"])
WORDS = 30


def _slow(gap_ms: int = 60, words: int = WORDS) -> dict:
    """Create arguments for a run of ``words`` text deltas ``gap_ms`` apart (on either provider kind)."""
    text = " ".join(f"w{i}" for i in range(words))
    return {"model": "m", "input": text, "extra_body": {"fake": {"gap_ms": gap_ms, "deltas": words + 2}}}


def _wait(check, timeout: float = 20.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out waiting")


def _until_done(sdk, response_id: str, timeout: float = 20.0):
    def done():
        response = sdk.responses.retrieve(response_id)
        return response if response.status not in ("queued", "in_progress") else None

    return _wait(done, timeout)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of a process's children, from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append((int(entry.name), cmdline))
    return out


def _consumers(server: Gunicorn) -> list[int]:
    return [pid for pid, cmd in _children(server.proc.pid) if "background.consumer" in cmd]


def _http_workers(server: Gunicorn) -> list[int]:
    return [pid for pid, cmd in _children(server.proc.pid) if "background.consumer" not in cmd]


@pytest.fixture(scope="module")
def bg(gateway_env):
    server = Gunicorn({**gateway_env, "GATEWAY_BACKGROUND_CONSUMERS": "1"})
    _wait(lambda: _consumers(server), 10)
    yield server
    server.stop()


@pytest.fixture
def sdk_for(bg, make_sdk):
    return lambda provider, url=None: make_sdk((url or bg.url) + "/v1", provider=provider)


# ------------------------------------------------------------------------------------------ create and poll
@pytest.mark.slow
@PROVIDERS
def test_background_create_answers_at_once_and_runs_to_completion(sdk_for, provider, fake):
    sdk = sdk_for(provider)
    started = time.monotonic()
    created = sdk.responses.create(background=True, **_slow(gap_ms=20))
    assert time.monotonic() - started < 1.0
    assert created.status == "queued" and created.background is True and created.output == []
    done = _until_done(sdk, created.id)
    assert done.status == "completed" and done.id == created.id and done.background is True
    assert done.output_text == "Echo 1: " + " ".join(f"w{i}" for i in range(WORDS))
    assert done.usage is not None and done.usage.total_tokens > 0
    assert sdk.responses.input_items.list(created.id).data[0].content[0].text.startswith("w0 w1")
    # A follow-up turn continues it, whichever provider kind made it: a native provider is sent the history
    # (it never saw the gateway's id for the run).
    follow = sdk.responses.create(model="m", input="and then", previous_response_id=created.id)
    if provider == "fakechat":
        assert follow.output_text == "Echo 2: and then"
    else:
        sent = fake.requests[-1]["body"]
        assert "previous_response_id" not in sent and "w0 w1" in str(sent["input"])
        assert follow.previous_response_id == created.id


@PROVIDERS
def test_a_background_run_in_a_conversation_joins_it(sdk_for, provider):
    # The queued job lost the conversation: the run answered, and the conversation stayed empty.
    sdk = sdk_for(provider)
    conversation = sdk.conversations.create()
    created = sdk.responses.create(background=True, model="m", input="hello there", conversation=conversation.id)
    assert created.conversation.id == conversation.id
    done = _until_done(sdk, created.id)
    assert done.status == "completed" and done.conversation.id == conversation.id
    items = sdk.conversations.items.list(conversation.id, order="asc").data
    assert [(i.type, i.role) for i in items] == [("message", "user"), ("message", "assistant")]
    sdk.responses.create(model="m", input="next", conversation=conversation.id)
    assert len(sdk.conversations.items.list(conversation.id).data) == 4


@pytest.mark.slow
@PROVIDERS
def test_polling_shows_status_and_partial_output(sdk_for, provider):
    sdk = sdk_for(provider)
    created = sdk.responses.create(background=True, **_slow(gap_ms=120))
    partial = _wait(lambda: (r := sdk.responses.retrieve(created.id)).status == "in_progress" and r.output_text and r)
    assert 0 < len(partial.output_text) < len("Echo 1: " + " ".join(f"w{i}" for i in range(WORDS)))
    assert partial.output[0].status == "in_progress"
    assert _until_done(sdk, created.id).status == "completed"


# ------------------------------------------------------------------------------------------ stream, resume
@pytest.mark.slow
@PROVIDERS
def test_a_dropped_stream_resumes_with_every_event_once_in_order(sdk_for, provider):
    sdk = sdk_for(provider)
    stream = sdk.responses.create(background=True, stream=True, **_slow(gap_ms=40))
    seen = []
    for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta" and len(seen) >= 8:
            break
    stream.close()  # the client goes away mid-run
    assert seen[0].type == "response.created" and seen[0].response.status == "queued"
    response_id, last = seen[0].response.id, seen[-1].sequence_number
    rest = list(sdk.responses.retrieve(response_id, stream=True, starting_after=last))
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(len(numbers)))
    assert rest[-1].type == "response.completed"
    text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
    assert text == rest[-1].response.output_text
    # A full replay from the start gives the same events.
    again = list(sdk.responses.retrieve(response_id, stream=True))
    assert [e.sequence_number for e in again] == numbers


@pytest.mark.slow
def test_the_sdk_stream_helper_follows_a_background_response(sdk_for):
    sdk = sdk_for("fakechat")
    created = sdk.responses.create(background=True, **_slow(gap_ms=10))
    with sdk.responses.stream(response_id=created.id) as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text.startswith("Echo 1: w0")


# ------------------------------------------------------------------------------------------ cancel
@pytest.mark.slow
@PROVIDERS
def test_cancel_mid_run_closes_the_provider_call_and_keeps_partial_output(sdk_for, provider, fake):
    sdk = sdk_for(provider)
    created = sdk.responses.create(background=True, **_slow(gap_ms=150))
    _wait(lambda: sdk.responses.retrieve(created.id).output_text)
    fake.disconnected.clear()
    cancelled = sdk.responses.cancel(created.id)
    asked = time.monotonic()
    assert cancelled.status == "cancelled" and cancelled.output_text
    assert fake.disconnected.wait(2.0), "the provider connection was not closed"
    assert time.monotonic() - asked < 1.5
    time.sleep(0.5)  # nothing the consumer read after the cancel changes the record
    stored = sdk.responses.retrieve(created.id)
    assert stored.status == "cancelled" and stored.output_text == cancelled.output_text
    # The stream agrees: the text deltas add up to the kept output, then an error event says why it ended.
    with pytest.raises(openai.APIError, match="cancelled"):
        deltas = []
        for event in sdk.responses.retrieve(created.id, stream=True):
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
    assert "".join(deltas) == stored.output_text
    # Cancelling again returns it unchanged.
    assert sdk.responses.cancel(created.id).model_dump() == stored.model_dump()


@PROVIDERS
def test_cancel_of_a_finished_response_returns_it_unchanged(sdk_for, provider):
    sdk = sdk_for(provider)
    created = sdk.responses.create(background=True, model="m", input="quick")
    done = _until_done(sdk, created.id)
    assert sdk.responses.cancel(created.id).model_dump() == done.model_dump()


@PROVIDERS
def test_cancel_of_a_foreground_response_is_400(sdk_for, provider):
    sdk = sdk_for(provider)
    created = sdk.responses.create(model="m", input="hi")
    with pytest.raises(openai.BadRequestError, match="background=true"):
        sdk.responses.cancel(created.id)


# ------------------------------------------------------------------------------------------ bad input
@PROVIDERS
def test_bad_input(sdk_for, make_sdk, bg, provider):
    sdk = sdk_for(provider)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.create(model="m", input="hi", background=True, store=False)
    assert info.value.param == "store"
    created = sdk.responses.create(background=True, model="m", input="hi")
    done = _until_done(sdk, created.id)
    last = list(sdk.responses.retrieve(done.id, stream=True))[-1].sequence_number
    for bad in ("abc", -1, last + 1):
        with pytest.raises(openai.BadRequestError) as info:
            list(sdk.responses.retrieve(done.id, stream=True, starting_after=bad))
        assert info.value.param == "starting_after"
    assert list(sdk.responses.retrieve(done.id, stream=True, starting_after=last)) == []
    other = make_sdk(bg.url + "/v1", api_key="sk-another-tenant", provider=provider)
    for call in (other.responses.cancel, other.responses.retrieve):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    with pytest.raises(openai.NotFoundError):
        list(other.responses.retrieve(created.id, stream=True))
    assert sdk.responses.retrieve(created.id).status == "completed"


# ------------------------------------------------------------------------------------------ processes
@pytest.mark.slow
def test_the_run_survives_the_http_workers_being_killed(sdk_for, bg):
    sdk = sdk_for("openai")
    created = sdk.responses.create(background=True, **_slow(gap_ms=60))
    _wait(lambda: sdk.responses.retrieve(created.id).output_text)
    for pid in _http_workers(bg):  # the one that accepted the create among them
        os.kill(pid, signal.SIGKILL)
    done = _wait(lambda: _retrieve_quietly(sdk, created.id), 30)
    assert done.status == "completed" and done.output_text.endswith(f"w{WORDS - 1}")


def _retrieve_quietly(sdk, response_id):
    try:
        response = sdk.responses.retrieve(response_id)
    except openai.APIConnectionError:  # gunicorn is booting new workers
        return None
    return response if response.status == "completed" else None


@pytest.mark.slow
def test_a_consumer_killed_mid_run_ends_its_response_failed(gateway_env, make_sdk, tmp_path):
    env = {
        **gateway_env,
        "GATEWAY_STORE_URL": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "GATEWAY_BACKGROUND_CONSUMERS": "1",
        "GATEWAY_BACKGROUND_LEASE_TIMEOUT": "1.5",
    }
    server = Gunicorn(env)
    try:
        consumer = _wait(lambda: _consumers(server), 10)[0]
        sdk = make_sdk(server.url + "/v1", provider="fakechat")
        created = sdk.responses.create(background=True, **_slow(gap_ms=200))
        _wait(lambda: sdk.responses.retrieve(created.id).output_text)
        os.kill(consumer, signal.SIGKILL)
        failed = _until_done(sdk, created.id, timeout=15)
        assert failed.status == "failed" and "heartbeat" in failed.error.message
        assert failed.output_text  # the output it had
        events = list(sdk.responses.retrieve(created.id, stream=True))
        assert events[-1].type == "response.failed"
        # The master started another consumer, which runs new work.
        _wait(lambda: [p for p in _consumers(server) if p != consumer], 15)
        again = sdk.responses.create(background=True, model="m", input="after")
        assert _until_done(sdk, again.id).status == "completed"
    finally:
        server.stop()


@pytest.mark.slow
def test_two_gateways_on_one_postgresql_and_redis(gateway_env, pg_schema, redis_url, make_sdk, fake):
    env = {
        **gateway_env,
        "GATEWAY_STORE_URL": pg_schema,
        "GATEWAY_BACKGROUND_QUEUE": redis_url,
    }
    first = Gunicorn({**env, "GATEWAY_BACKGROUND_CONSUMERS": "1"})
    second = Gunicorn({**env, "GATEWAY_BACKGROUND_CONSUMERS": "1"})
    try:
        for provider in ("fakechat", "openai"):
            one = make_sdk(first.url + "/v1", provider=provider)
            two = make_sdk(second.url + "/v1", provider=provider)
            created = one.responses.create(background=True, **_slow(gap_ms=100))
            seen = []
            for event in two.responses.retrieve(created.id, stream=True):
                seen.append(event)
                if event.type == "response.output_text.delta" and len(seen) > 6:
                    break
            fake.disconnected.clear()
            cancelled = two.responses.cancel(created.id)
            assert cancelled.status == "cancelled"
            assert fake.disconnected.wait(2.0)
            stored = one.responses.retrieve(created.id)
            assert stored.status == "cancelled" and stored.output_text == cancelled.output_text
            quick = two.responses.create(background=True, model="m", input="from the second")
            assert _until_done(one, quick.id).output_text == "Echo 1: from the second"
    finally:
        first.stop()
        second.stop()


# ------------------------------------------------------------------------------------------ in-process
def test_a_tenant_past_its_limit_is_429_in_the_error_shape(fake, tmp_path):
    from gateway import create_app
    from tests.conftest import close_app

    app = create_app(
        {
            "providers": {"fakechat": {"base_url": fake.url, "api": "chat"}},
            "store_url": f"sqlite:///{tmp_path / 'store.sqlite3'}",
            "background_max_per_tenant": 2,
        }
    )
    try:
        client = app.test_client()

        def create(key: str):
            headers = {"Authorization": f"Bearer {key}", "x-portkey-provider": "fakechat"}
            return client.post("/v1/responses", json={"model": "m", "input": "hi", "background": True}, headers=headers)

        made = [create(KEY) for _ in range(2)]
        assert [r.status_code for r in made] == [200, 200]
        refused = create(KEY)
        assert refused.status_code == 429
        assert set(refused.json["error"]) == {"message", "type", "param", "code"}
        assert "background_max_per_tenant" in refused.json["error"]["message"]
        assert create("sk-someone-else").status_code == 200
        # A cancelled one frees its place.
        headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"}
        client.post(f"/v1/responses/{made[0].json['id']}/cancel", headers=headers)
        assert create(KEY).status_code == 200
    finally:
        close_app(app)


@pytest.mark.slow
def test_events_of_old_runs_are_purged_and_the_response_stays(fake, tmp_path):
    from click.testing import CliRunner
    from flask.cli import ScriptInfo

    from gateway import create_app
    from gateway.cli import main
    from tests.conftest import close_app

    app = create_app(
        {
            "providers": {"fakechat": {"base_url": fake.url, "api": "chat"}},
            "store_url": f"sqlite:///{tmp_path / 'store.sqlite3'}",
            "background_event_retention": "1s",
        }
    )
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"}
        created = client.post(
            "/v1/responses", json={"model": "m", "input": "hi", "background": True}, headers=headers
        ).json
        cancel = client.post(f"/v1/responses/{created['id']}/cancel", headers=headers).json
        assert cancel["status"] == "cancelled"
        time.sleep(1.1)
        result = CliRunner().invoke(main, ["purge"], obj=ScriptInfo(create_app=lambda: app))
        assert "purged the events of 1 background responses" in result.output
        assert client.get(f"/v1/responses/{created['id']}", headers=headers).json["status"] == "cancelled"
        replay = client.get(f"/v1/responses/{created['id']}?stream=true", headers=headers)
        assert replay.status_code == 404 and "background_event_retention" in replay.json["error"]["message"]
    finally:
        close_app(app)


def test_a_queued_response_is_unique_to_its_store(tmp_path):
    """Two deployments sharing one Redis never run each other's jobs: the queue is named by the store."""
    from gateway.config import Settings
    from gateway.store import Store

    names = set()
    for i in range(2):
        store = Store(f"sqlite:///{tmp_path / f's{i}.sqlite3'}")
        store.migrate()
        names.add(store.secret("queue_name"))
        store.dispose()
    assert len(names) == 2
    assert Settings.load({"background_queue": "redis://h:1/0"}).background_queue.startswith("redis")
    with pytest.raises(ValueError):
        Settings.load({"background_queue": "amqp://x"})


@pytest.mark.slow
def test_background_on_an_in_memory_store_is_refused(fake):
    from gateway import create_app
    from tests.conftest import close_app

    app = create_app({"providers": {"fakechat": {"base_url": fake.url, "api": "chat"}}, "store_url": "sqlite://"})
    try:
        resp = app.test_client().post(
            "/v1/responses",
            json={"model": "m", "input": "hi", "background": True},
            headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"},
        )
        assert resp.status_code == 400 and resp.json["error"]["param"] == "background"
    finally:
        close_app(app)


# ------------------------------------------------------------------------------------------ a hostile queue
class _Boom:
    """A pickle that runs a command when it is loaded: what anyone who can write to the queue could send."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.slow
def test_messages_on_the_queue_that_are_not_jobs_run_nothing(gateway_env, redis_url, make_sdk, tmp_path):
    import pickle

    from gateway.background.queue import make_queue
    from gateway.config import Settings
    from gateway.store import Store

    marker = tmp_path / "ran"
    env = {**gateway_env, "GATEWAY_BACKGROUND_QUEUE": redis_url, "GATEWAY_BACKGROUND_CONSUMERS": "1"}
    server = Gunicorn(env)
    _wait(lambda: _consumers(server), 10)
    sdk = make_sdk(server.url + "/v1", provider="fakechat")
    assert _until_done(sdk, sdk.responses.create(background=True, model="m", input="before").id).status == "completed"

    store = Store(gateway_env["GATEWAY_STORE_URL"])
    name = store.secret("queue_name")[:16]
    store.dispose()
    queue = make_queue(Settings.load({"background_queue": redis_url}), name)
    hostile = [
        pickle.dumps(_Boom(f"touch {marker}")),
        b'{"task": "os.system", "id": "x", "run": "resp_1"}',  # a job's shape, a task the gateway has not
        b'{"task": "t", "id": "x", "run": ["resp_1"]}',
        b"\x00not json",
    ]
    for message in hostile:
        queue.storage.enqueue(message)
    after = sdk.responses.create(background=True, model="m", input="after")
    assert _until_done(sdk, after.id).status == "completed"  # the consumer read past them and still runs jobs
    assert queue.storage.queue_size() == 0
    time.sleep(0.5)
    out = server.output()
    server.stop()
    assert not marker.exists()
    assert out.count("dropped a message that is not a job") == len(hostile), out
    assert "Traceback" not in out  # one line each


@pytest.fixture
def private_redis():
    """A Redis of this test's own, which it may take down and bring back on the same port."""
    from tests.services import PrivateRedis

    server = PrivateRedis().start()
    yield server
    server.stop()


@pytest.mark.slow
def test_a_queue_that_goes_away_is_one_line_then_one_when_it_is_back(gateway_env, private_redis, make_sdk):
    env = {**gateway_env, "GATEWAY_BACKGROUND_QUEUE": private_redis.url, "GATEWAY_BACKGROUND_CONSUMERS": "1"}
    server = Gunicorn(env, workers=1)
    _wait(lambda: _consumers(server), 10)
    sdk = make_sdk(server.url + "/v1", provider="openai")
    _until_done(sdk, sdk.responses.create(background=True, model="m", input="before").id)

    private_redis.down()
    with pytest.raises(openai.APIStatusError) as info:
        sdk.responses.create(background=True, model="m", input="while down")
    assert info.value.status_code == 503
    ready = requests.get(server.url + "/readyz", timeout=10)
    # The store is up: still ready (a shared Redis going down must not empty the load balancer), and says so.
    assert ready.status_code == 200 and ready.json()["queue"]["status"] == "unreachable"
    time.sleep(8)  # the consumer keeps trying meanwhile, with backoff
    private_redis.start()
    _wait(lambda: "background queue reachable again" in server.output(), 30)
    _until_done(sdk, sdk.responses.create(background=True, model="m", input="after").id)
    assert requests.get(server.url + "/readyz", timeout=10).json()["queue"] == {"status": "ok"}
    out = server.stop()
    said = [line for line in out.splitlines() if "background queue" in line]
    print("\n".join(said))
    assert "Traceback" not in out, out[-3000:]
    # One line each way from the consumer and from the worker that found it down: four at most.
    assert 2 <= len(said) <= 4, said


def test_the_sqlite_queue_is_private_to_its_owner(tmp_path):
    import stat

    from gateway.background.queue import make_queue
    from gateway.config import Settings

    path = tmp_path / "queue.sqlite3"
    old = os.umask(0o022)
    try:
        queue = make_queue(Settings.load({"background_queue": f"sqlite:///{path}"}), "private")
        queue.storage.enqueued_items()  # opens the database (and its WAL files)
        for name in (path, tmp_path / "queue.sqlite3-wal", tmp_path / "queue.sqlite3-shm"):
            if name.exists():
                assert stat.S_IMODE(name.stat().st_mode) == 0o600, (name, oct(name.stat().st_mode))
        assert path.exists()
    finally:
        os.umask(old)


def test_a_queued_job_keeps_no_key_in_clear(settings):
    # issue 21 item 9: a config's targets[].api_key and openai-* headers were in gw_runs.job in clear.
    from gateway import create_app
    from gateway.auth import Caller
    from tests.conftest import close_app

    app = create_app(settings)
    try:
        background = app.extensions["gateway"].background
        config = '{"targets": [{"provider": "openai", "api_key": "sk-conf-hush"}]}'
        headers = {"x-portkey-config": config, "OpenAI-Organization": "org-hush", "Authorization": "Bearer x"}
        caller = Caller(tenant="pk:t", provider_key="sk-caller-hush")
        mcp = {"type": "mcp", "server_label": "s", "server_url": "https://mcp.example.com/mcp"}
        secrets = {"headers": {"X-Api-Key": "mcp-hush"}, "authorization": "oauth-hush"}
        body = {"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {**mcp, **secrets}]}
        job = background.seal_job("resp_1", caller, headers, body)
        assert "hush" not in job
        opened = background.open_job("resp_1", job)
        assert opened.body == body  # the MCP server's credentials too, back in their tool
        assert opened.headers == {"x-portkey-config": config, "openai-organization": "org-hush"}
        assert opened.provider_key == "sk-caller-hush"
        with pytest.raises(ValueError):
            background.open_job("resp_2", job)  # sealed for its own response only
    finally:
        close_app(app)


def test_a_run_left_queued_is_queued_again_once_then_fails_and_stops_counting(settings, tmp_path):
    # issue 21 item 3: a claim that failed, or a Redis restarted empty, left runs queued forever.
    from gateway import create_app
    from tests.conftest import close_app

    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    app = create_app({**settings, "store_url": url, "background_queued_timeout": 60})
    other = create_app({**settings, "store_url": url, "background_queued_timeout": 60})  # another host
    try:
        background = app.extensions["gateway"].background
        store = background.store
        response = {"id": "resp_lost", "object": "response", "status": "queued", "model": "m", "output": []}
        store.background.submit(
            tenant="t", provider="openai", response=response, input_items=[], job="{}", first_events=[], limit=0
        )
        now = time.time()
        assert store.background.stale_queued(now, 60) == ([], [])  # not late yet
        later = now + 61
        assert store.background.stale_queued(later, 60) == (["resp_lost"], [])
        # The other host sweeping at the same time finds it marked: it is queued again exactly once.
        assert other.extensions["gateway"].background.store.background.stale_queued(later, 60) == ([], [])
        background.sweep_queued(later + 61)  # still queued a timeout after: it ends failed
        state = store.get("t", "resp_lost").body
        assert state["status"] == "failed" and state["error"]["code"] == "server_error"
        assert store.background.state("resp_lost").status == "failed"  # no longer counted against the tenant
    finally:
        close_app(app)
        close_app(other)


def test_keys_with_no_completed_response_share_a_small_cap(settings, fake, tmp_path):
    # issue 21 item 10: 400 runs under made-up keys were accepted in 2 s, and a real tenant's waited 119 s.
    from gateway import create_app
    from tests.conftest import close_app

    app = create_app({**settings, "store_url": f"sqlite:///{tmp_path / 's.db'}", "background_max_unproven": 2})
    client = app.test_client()

    def background(key: str) -> int:
        headers = {"Authorization": f"Bearer {key}", "x-portkey-provider": "openai"}
        return client.post("/v1/responses", json={"model": "m", "input": "x", "background": True}, headers=headers)

    try:
        assert background("sk-made-up-1").status_code == 200
        assert background("sk-made-up-2").status_code == 200
        refused = background("sk-made-up-3")
        assert refused.status_code == 429 and "background_max_unproven" in refused.json["error"]["message"]
        # A key with a completed response of its own is past that cap (its own cap still holds).
        headers = {"Authorization": "Bearer sk-proven", "x-portkey-provider": "openai"}
        assert client.post("/v1/responses", json={"model": "m", "input": "x"}, headers=headers).status_code == 200
        assert background("sk-proven").status_code == 200
    finally:
        close_app(app)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_queue_serves_tenants_fairly(settings, tmp_path, database, request):
    # issue 21 item 10: runs are taken in turn across tenants, not in the order they were sent. A tenant
    # that queued five runs before another's one has its second wait behind the other's first.
    from gateway import create_app
    from tests.conftest import close_app

    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:  # a schema of its own: queued runs other tests left would be chosen too
        import sqlalchemy as sa

        pg_url, schema = request.getfixturevalue("pg_url"), f"gw_fair_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
        url = f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    app = create_app({**settings, "store_url": url})
    try:
        store = app.extensions["gateway"].background.store.background

        def submit(tenant: str, n: int) -> str:
            response_id = f"resp_{tenant}_{n}_{uuid.uuid4().hex[:6]}"
            response = {"id": response_id, "object": "response", "status": "queued", "model": "m", "output": []}
            store.submit(tenant=tenant, provider="openai", response=response, input_items=[], job="{}",
                         first_events=[], limit=0)  # fmt: skip
            time.sleep(0.01)  # distinct created_at
            return response_id

        many = [submit("busy", n) for n in range(5)]
        other = submit("quiet", 0)
        # Each message takes one run; which one is the store's choice.
        taken = [store.claim(message, "consumer-1", time.time() + 60).response_id for message in many[:3]]
        assert taken == [many[0], other, many[1]]
        assert store.claim(other, "consumer-1", time.time() + 60).response_id == many[2]  # its own was taken
    finally:
        close_app(app)
        if database == "postgresql":
            engine = sa.create_engine(pg_url)
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()


def test_consumers_claiming_at_once_on_postgresql_each_take_a_different_run(settings, pg_url):
    # Every message takes the fairest run, so consumers claiming together all choose the same one: each must
    # skip a run another holds, or runs would be left with no message to take them.
    import threading

    import sqlalchemy as sa

    from gateway import create_app
    from tests.conftest import close_app

    schema = f"gw_claim_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    app = create_app({**settings, "store_url": url})
    try:
        store = app.extensions["gateway"].background.store.background
        ids = []
        for n in range(24):
            response_id = f"resp_claim_{n}"
            response = {"id": response_id, "object": "response", "status": "queued", "model": "m", "output": []}
            store.submit(tenant=f"t{n % 4}", provider="openai", response=response, input_items=[], job="{}",
                         first_events=[], limit=0)  # fmt: skip
            ids.append(response_id)
        taken: list = []
        start = threading.Barrier(24)

        def consumer(message: str) -> None:
            start.wait()
            claimed = store.claim(message, f"consumer-{message}", time.time() + 60)
            taken.append(claimed.response_id if claimed else None)

        threads = [threading.Thread(target=consumer, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert None not in taken and sorted(taken) == sorted(ids)
    finally:
        close_app(app)
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

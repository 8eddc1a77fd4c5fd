"""WebSocket mode on /v1/responses, under gunicorn: the openai SDKs' client.responses.connect() (Python) and
ResponsesWS (Node), raw sockets for bad frames, and the socket through the real nginx of deploy/nginx.conf.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import threading
import time

import openai
import pytest
import requests
import sqlalchemy as sa
from openai._models import validate_type
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import KEY, ROOT, Gunicorn

PROVIDERS = ["fakechat", "openai"]  # emulated, native
TERMINAL = ("response.completed", "response.incomplete", "response.failed", "error")


def ws_url(server_url: str) -> str:
    return server_url.replace("http://", "ws://") + "/v1/responses"


@pytest.fixture
def sdk(gateway, make_sdk):
    def make(provider: str, url: str | None = None) -> openai.OpenAI:
        return make_sdk((url or gateway.url) + "/v1", provider=provider)

    return make


def run_turn(conn, **body) -> tuple[list[str], object]:
    """Send one response.create; the event types up to its terminal event, and that event."""
    conn.response.create(model="m", **body)
    types = []
    for event in conn:
        types.append(event.type)
        if event.type in TERMINAL:
            return types, event
    raise AssertionError(f"the socket closed after {types}")


def raw_turn(ws, frame: dict | str | bytes) -> list[dict]:
    """A raw frame; the events that answer it, up to a terminal one."""
    ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))
    events = []
    while True:
        event = json.loads(ws.recv(timeout=30))
        events.append(event)
        if event["type"] in TERMINAL:
            return events


def open_raw(url: str, provider: str = "openai"):
    return connect(ws_url(url), additional_headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": provider})


# ------------------------------------------------------------------------------------------ the SDK, two providers
@pytest.mark.parametrize("provider", PROVIDERS)
def test_sequential_responses_on_one_socket(sdk, provider):
    with sdk(provider).responses.connect() as conn:
        ids = []
        for word in ("one", "two", "three"):
            types, final = run_turn(conn, input=f"say {word}")
            assert final.type == "response.completed", final
            assert types[0] == "response.created" and "response.output_text.delta" in types
            assert final.response.output_text.endswith(f"say {word}")
            ids.append(final.response.id)
        assert len(set(ids)) == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_store_false_chain_by_previous_response_id(sdk, gateway, fake, provider):
    with sdk(provider).responses.connect() as conn:
        _, first = run_turn(conn, input="remember seven", store=False)
        _, second = run_turn(conn, input="which number?", store=False, previous_response_id=first.response.id)
        _, third = run_turn(conn, input="and again?", store=False, previous_response_id=second.response.id)
    assert third.type == "response.completed", third
    assert third.response.previous_response_id == second.response.id
    sent = fake.requests[-1]["body"]
    if provider == "fakechat":
        # The chat provider was sent the whole conversation: three user messages.
        assert third.response.output_text == "Echo 3: and again?"
        assert [m["role"] for m in sent["messages"]].count("user") == 3
    else:
        # The native provider kept nothing (store: false): it was sent the conversation, not an id.
        assert "previous_response_id" not in sent
        texts = json.dumps(sent["input"])
        assert "remember seven" in texts and "which number?" in texts and "Echo 1" in texts
    # Nothing was stored: the responses are the socket's alone.
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": provider}
    assert requests.get(f"{gateway.url}/v1/responses/{third.response.id}", headers=headers).status_code == 404


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_reconnect_recovers_with_store_true(sdk, provider):
    client = sdk(provider)
    with client.responses.connect() as conn:
        _, first = run_turn(conn, input="remember seven")
    with client.responses.connect() as conn:
        _, second = run_turn(conn, input="which number?", previous_response_id=first.response.id)
    assert second.type == "response.completed", second
    assert second.response.output_text == "Echo 2: which number?"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_previous_response_not_found_on_a_fresh_socket(sdk, provider):
    client = sdk(provider)
    with client.responses.connect() as conn:
        _, first = run_turn(conn, input="remember seven", store=False)
    with client.responses.connect() as conn:
        _, error = run_turn(conn, input="which number?", previous_response_id=first.response.id)
        assert error.type == "error"
        assert error.error.code == "previous_response_not_found"
        assert error.error.param == "previous_response_id"
        assert error.status == 400
        # The socket stays usable.
        _, again = run_turn(conn, input="start over")
        assert again.type == "response.completed"


@pytest.mark.parametrize("store", [False, True], ids=["store-false", "store-true"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_failed_continuation_evicts_the_response_it_continued(sdk, fake, provider, store):
    # As the API's WebSocket mode does: a turn that fails takes its previous response out of the socket's
    # memory, so no continuation builds on state the failure may have left half-made. A stored one reads
    # back from the store.
    with sdk(provider).responses.connect() as conn:
        _, first = run_turn(conn, input="remember seven", store=store)
        fake.knobs["status"] = 400
        try:
            _, failed = run_turn(conn, input="which?", store=store, previous_response_id=first.response.id)
        finally:
            fake.knobs.pop("status")
        assert failed.type == "error" and failed.status == 400 and failed.sequence_number == 0
        _, again = run_turn(conn, input="which number?", store=store, previous_response_id=first.response.id)
        if store:
            assert again.type == "response.completed", again
        else:
            assert again.type == "error" and again.error.code == "previous_response_not_found"
        # The socket goes on.
        _, fresh = run_turn(conn, input="start over", store=store)
        assert fresh.type == "response.completed", fresh
        if provider == "fakechat" and store:
            assert again.response.output_text == "Echo 2: which number?"


def test_a_turn_that_breaks_is_not_kept(gateway):
    # A stream the provider cuts ends with an error event; the socket does not hold its response, so
    # nothing continues from it, and the socket goes on.
    with open_raw(gateway.url) as ws:
        create = {"type": "response.create", "model": "m", "store": False}
        events = raw_turn(ws, {**create, "input": "a b c d e f", "metadata": {"fake_cut_after": "4"}})
        assert events[-1]["type"] == "error", events
        broken = events[0]["response"]["id"]
        (error,) = raw_turn(ws, {**create, "input": "go on", "previous_response_id": broken})
        assert error["error"]["code"] == "previous_response_not_found"
        assert raw_turn(ws, {**create, "input": "hello"})[-1]["type"] == "response.completed"


def test_generate_false_warms_up_without_calling_the_provider(sdk, fake):
    with sdk("fakechat").responses.connect() as conn:
        before = len(fake.requests)
        conn.response.create(model="m", instructions="be brief", input="my name is Ada", store=False, generate=False)
        types = []
        for event in conn:
            types.append(event.type)
            if event.type in TERMINAL:
                break
        assert types == ["response.created", "response.in_progress", "response.completed"]
        assert event.response.output == [] and event.response.status == "completed"
        assert len(fake.requests) == before
        _, answer = run_turn(conn, input="what is my name?", store=False, previous_response_id=event.response.id)
    assert answer.response.output_text == "Echo 2: what is my name?"
    # The warm-up's input is the conversation's start (its instructions, as the API's, are not carried on).
    assert fake.requests[-1]["body"]["messages"][0] == {"role": "user", "content": "my name is Ada"}


def test_generate_false_on_a_native_provider_then_a_continuation(sdk, fake):
    with sdk("openai").responses.connect() as conn:
        conn.response.create(model="m", input="my name is Ada", generate=False)
        for event in conn:
            if event.type in TERMINAL:
                break
        assert event.type == "response.completed"
        _, answer = run_turn(conn, input="what is my name?", previous_response_id=event.response.id)
    assert answer.type == "response.completed", answer
    sent = fake.requests[-1]["body"]
    # The provider never saw the warm-up: it is sent the conversation.
    assert "previous_response_id" not in sent and "my name is Ada" in json.dumps(sent["input"])


# ------------------------------------------------------------------------------------------ socket vs SSE
@pytest.mark.parametrize("provider", PROVIDERS)
def test_socket_events_equal_sse_events_type_by_type(gateway, provider):
    body = {"model": "m", "input": "one two three four five six", "store": False}
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": provider}
    sse = []
    with requests.post(
        gateway.url + "/v1/responses", json={**body, "stream": True}, headers=headers, stream=True, timeout=30
    ) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: "):
                sse.append(json.loads(line[6:]))
    with open_raw(gateway.url, provider) as ws:
        socket = raw_turn(ws, {"type": "response.create", **body})
    assert [e["type"] for e in socket] == [e["type"] for e in sse]
    assert [e["sequence_number"] for e in socket] == [e["sequence_number"] for e in sse]
    assert [sorted(e) for e in socket] == [sorted(e) for e in sse]  # the same fields in every event


# ------------------------------------------------------------------------------------------ bad frames
def _store_count(gateway_env) -> int:
    engine = sa.create_engine(gateway_env["GATEWAY_STORE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM gw_responses")).scalar_one()
    finally:
        engine.dispose()


BAD_FRAMES = [
    ("not JSON", "{not json", 400, "invalid_json", None),
    ("binary", b'{"type": "response.create"}', 400, "invalid_frame", None),
    ("not an object", "[1, 2]", 400, "invalid_json", None),
    ("no type", {"model": "m", "input": "hi"}, 400, "invalid_value", "type"),
    ("unknown type", {"type": "response.explode"}, 400, "unknown_event", "type"),
    ("unsupported type", {"type": "response.steer", "input": "x", "previous_response_id": "r"}, 400,
     "unsupported_event", "type"),
    ("model of the wrong type", {"type": "response.create", "model": 7, "input": "hi"}, 400, None, "model"),
    ("input of the wrong type", {"type": "response.create", "model": "m", "input": 7}, 400, None, "input"),
    ("generate of the wrong type", {"type": "response.create", "model": "m", "generate": "no"}, 400,
     "invalid_type", "generate"),
    ("stream_id of the wrong type", {"type": "response.create", "model": "m", "stream_id": 5}, 400,
     "invalid_type", "stream_id"),
    ("background", {"type": "response.create", "model": "m", "input": "hi", "background": True}, 400,
     "unsupported_parameter", "background"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("frame", "status", "code", "param"), [f[1:] for f in BAD_FRAMES], ids=[f[0] for f in BAD_FRAMES]
)
def test_bad_frames_are_error_events_and_the_socket_survives(gateway, gateway_env, fake, frame, status, code, param):
    stored, asked = _store_count(gateway_env), len(fake.requests)
    with open_raw(gateway.url) as ws:
        (event,) = raw_turn(ws, frame)
        assert event["type"] == "error" and event["status"] == status
        # What the SDK's stream types require of an error event (issue 23's WebSocket fidelity).
        validate_type(type_=openai.types.responses.ResponseErrorEvent, value=event)
        assert event["code"] == event["error"]["code"] and event["sequence_number"] == 0
        error = event["error"]
        assert set(error) >= {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        assert error["param"] == param
        if code is not None:
            assert error["code"] == code
        if "unsupported" in (code or ""):
            assert "response.steer" in error["message"] or "background" in error["message"]
        assert len(fake.requests) == asked  # nothing reached a provider
        good = raw_turn(ws, {"type": "response.create", "model": "m", "input": "still here?", "store": False})
        assert good[-1]["type"] == "response.completed"
    assert _store_count(gateway_env) == stored


@pytest.mark.slow
def test_an_oversized_frame_is_an_error_event(gateway_env, fake):
    server = Gunicorn({**gateway_env, "GATEWAY_MAX_BODY_BYTES": "65536"}, workers=1)
    try:
        with open_raw(server.url) as ws:
            (event,) = raw_turn(ws, json.dumps({"type": "response.create", "model": "m", "input": "x" * 70000}))
            assert event["status"] == 413 and event["error"]["code"] == "request_too_large"
            assert "max_body_bytes" in event["error"]["message"]
            good = raw_turn(ws, {"type": "response.create", "model": "m", "input": "small", "store": False})
            assert good[-1]["type"] == "response.completed"
            # Past twice the limit the frame is not read at all: the socket is closed, 1009 (message too big).
            ws.send(json.dumps({"type": "response.create", "model": "m", "input": "x" * 140000}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1009
    finally:
        server.stop()


def test_the_handshake_checks_key_and_provider_before_the_upgrade(gateway):
    with pytest.raises(Exception) as refused:
        connect(ws_url(gateway.url), additional_headers={"x-portkey-provider": "openai"})
    assert "401" in str(refused.value)
    with pytest.raises(Exception) as unknown:
        connect(
            ws_url(gateway.url), additional_headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "nope"}
        )
    assert "400" in str(unknown.value)
    # A plain GET is still not a way to create.
    assert requests.get(gateway.url + "/v1/responses").status_code == 405


@pytest.mark.slow
def test_a_response_create_sent_while_one_runs_waits_its_turn(gateway):
    slow = {"type": "response.create", "model": "m", "input": "a b c d e f", "store": False,
            "metadata": {"fake_deltas": "6", "fake_gap_ms": "100"}}  # fmt: skip
    with open_raw(gateway.url) as ws:
        ws.send(json.dumps(slow))
        ws.send(json.dumps({**slow, "input": "second", "stream_id": "lane-2"}))
        events = []
        while len([e for e in events if e["type"] in TERMINAL]) < 2:
            events.append(json.loads(ws.recv(timeout=30)))
    ends = [i for i, e in enumerate(events) if e["type"] == "response.completed"]
    second_start = [i for i, e in enumerate(events) if e["type"] == "response.created"][1]
    assert ends[0] < second_start  # queued, not interleaved
    assert all(e.get("stream_id") == "lane-2" for e in events[second_start:])
    assert all("stream_id" not in e for e in events[:second_start])


# ------------------------------------------------------------------------------------------ bounds
@pytest.mark.slow
def test_frames_sent_during_a_slow_turn_are_bounded_while_it_runs(gateway_env):
    # The frames a client sends behind a running turn are held in the worker: past max_body_bytes of them
    # the client gets an error event and the socket closes (1008) at once, not when the turn ends.
    server = Gunicorn({**gateway_env, "GATEWAY_MAX_BODY_BYTES": "100000"}, workers=1)
    slow = {"type": "response.create", "model": "m", "input": "a b c d e f", "store": False,
            "metadata": {"fake_deltas": "50", "fake_gap_ms": "100"}}  # fmt: skip
    try:
        with open_raw(server.url) as ws:
            ws.send(json.dumps(slow))
            assert json.loads(ws.recv(timeout=10))["type"] == "response.created"
            started = time.monotonic()

            def send_more() -> None:  # 4 x 40 kB behind a turn of 5 s; the close may come before the last
                with contextlib.suppress(ConnectionClosed):
                    for n in range(4):
                        ws.send(json.dumps({**slow, "input": "x" * 40_000, "stream_id": f"s{n}"}))

            sender = threading.Thread(target=send_more)
            sender.start()
            refused = None
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    event = json.loads(ws.recv(timeout=10))
                    if event["type"] == "error":
                        refused = event
            assert time.monotonic() - started < 4  # before the running turn could have ended
            sender.join(10)
        assert refused is not None and refused["code"] == "too_many_frames" and refused["sequence_number"] == 0
        assert closed.value.rcvd.code == 1008 and "100000 bytes" in closed.value.rcvd.reason
        assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    finally:
        server.stop()


@pytest.mark.slow
def test_sockets_per_key_and_the_reserve_for_plain_requests(gateway_env, fake):
    server = Gunicorn(
        {**gateway_env, "GATEWAY_WEBSOCKET_MAX_PER_KEY": "2", "GATEWAY_WEBSOCKET_RESERVE": "12"}, workers=1
    )  # 16 connections a worker: 4 for sockets, 12 kept for plain requests

    def socket(key: str):
        return connect(
            ws_url(server.url), additional_headers={"Authorization": f"Bearer {key}", "x-portkey-provider": "openai"}
        )

    try:
        with socket("sk-one") as a, socket("sk-one") as b:
            with pytest.raises(InvalidStatus) as per_key:
                socket("sk-one")
            assert per_key.value.response.status_code == 429
            assert json.loads(per_key.value.response.body)["error"]["code"] == "too_many_websockets"
            with socket("sk-two") as c, socket("sk-three") as d:
                with pytest.raises(InvalidStatus) as full:
                    socket("sk-four")
                assert full.value.response.status_code == 503
                assert json.loads(full.value.response.body)["error"]["code"] == "websocket_capacity"
                # Plain requests still have their room.
                answered = requests.post(
                    server.url + "/v1/responses",
                    json={"model": "m", "input": "hi"},
                    headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"},
                    timeout=10,
                )
                assert answered.status_code == 200
                for ws in (a, b, c, d):
                    ws.send(json.dumps({"type": "response.create", "model": "m", "input": "hi", "store": False}))
                    assert json.loads(ws.recv(timeout=10))["type"] == "response.created"
        # Closed sockets are given back.
        time.sleep(0.5)
        with socket("sk-one"), socket("sk-one"):
            pass
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------ lifecycle
@pytest.mark.slow
def test_an_idle_socket_is_closed(gateway_env):
    server = Gunicorn({**gateway_env, "GATEWAY_WEBSOCKET_IDLE_TIMEOUT": "1"}, workers=1)
    try:
        with open_raw(server.url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1000 and "idle" in closed.value.rcvd.reason
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_sigterm_lets_the_running_turn_finish_then_closes_going_away(gateway_env, worker_class):
    server = Gunicorn({**gateway_env, "GATEWAY_GRACEFUL_TIMEOUT": "20"}, workers=1, worker_class=worker_class)
    try:
        idle, busy = open_raw(server.url), open_raw(server.url)
        busy.send(json.dumps({"type": "response.create", "model": "m", "input": "a b c d e f g h", "store": False,
                              "metadata": {"fake_deltas": "8", "fake_gap_ms": "300"}}))  # fmt: skip
        assert json.loads(busy.recv(timeout=10))["type"] == "response.created"
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            idle.recv(timeout=10)
        assert closed.value.rcvd.code == 1001
        types = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                types.append(json.loads(busy.recv(timeout=10))["type"])
        assert types[-1] == "response.completed"
        assert closed.value.rcvd.code == 1001
        assert server.proc.wait(20) == 0
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_a_client_that_leaves_closes_the_provider_connection_at_once(gateway_env, worker_class):
    from tests.test_heartbeats import StallingProvider

    # The provider goes silent after its first event: only the client's leaving can end the call.
    staller = StallingProvider()
    env = {
        **gateway_env,
        "GATEWAY_PROVIDERS__STALLER__BASE_URL": staller.url,
        "GATEWAY_PROVIDERS__STALLER__API": "responses",
    }
    server = Gunicorn(env, workers=1, worker_class=worker_class)
    try:
        with open_raw(server.url, "staller") as ws:
            ws.send(json.dumps({"type": "response.create", "model": "m", "input": "hi", "store": False}))
            assert json.loads(ws.recv(timeout=10))["type"] == "response.created"
            left = time.monotonic()
        deadline = left + 3  # well inside the 15 s heartbeat interval: the socket's reader noticed
        while not staller.closed_at and time.monotonic() < deadline:
            time.sleep(0.05)
        assert staller.closed_at, "the provider connection is still open"
    finally:
        server.stop()
        staller.stop()


# ------------------------------------------------------------------------------------------ Node, nginx
def test_the_node_sdk_chains_on_a_socket(gateway):
    node = shutil.which("node")
    assert node, "node is required (.ci/run installs it)"
    ran = subprocess.run(
        [node, "responses_socket.mjs", gateway.url + "/v1", "fakechat"],
        cwd=ROOT / "tests" / "node_client",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    first, second, third = json.loads(ran.stdout)["turns"]
    assert first["types"][0] == "response.created" and first["types"][-1] == "response.completed"
    assert second["text"] == "Echo 2: which number?"
    assert third["types"] == ["error"] and third["error"] == "previous_response_not_found"


@pytest.mark.slow
def test_a_socket_through_nginx(gateway, sdk, tmp_path):
    from tests.test_nginx import _nginx

    nginx = _nginx(gateway, tmp_path)
    url = next(nginx)
    try:
        with sdk("fakechat", url).responses.connect() as conn:
            _, first = run_turn(conn, input="remember seven", store=False)
            _, second = run_turn(conn, input="which number?", store=False, previous_response_id=first.response.id)
        assert second.response.output_text == "Echo 2: which number?"
        with open_raw(url) as ws:
            (event,) = raw_turn(ws, "{nope")
            assert event["error"]["code"] == "invalid_json"
    finally:
        next(nginx, None)  # runs the generator on: nginx is stopped

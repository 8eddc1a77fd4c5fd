"""Metrics across gunicorn workers and the JSON access log, from a real gunicorn."""

from __future__ import annotations

import json
import logging
import re
import time

import openai
import pytest
import requests

from tests.conftest import KEY, Gunicorn


@pytest.fixture(scope="module")
def observed(gateway_env):
    server = Gunicorn(gateway_env, workers=2, threads=4)
    yield server
    server.stop()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_metrics_count_every_worker(observed, make_sdk):
    sdk = make_sdk(observed.url + "/v1")
    before = requests.get(observed.url + "/metrics", timeout=10).text
    for _ in range(20):  # new connections each time: both workers take some
        sdk.responses.create(model="gpt-test", input="count me")
    list(sdk.responses.create(model="gpt-test", input="stream me", stream=True))
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="gpt-test", input="x", previous_response_id="resp_missing")
    text = requests.get(observed.url + "/metrics", timeout=10).text
    ok = dict(endpoint="/v1/responses", provider="openai", model="gpt-test", mode="native", status="200")
    assert _metric(text, "gateway_requests_total", **ok) - _metric(before, "gateway_requests_total", **ok) == 21
    assert _metric(text, "gateway_requests_total", status="400", provider="openai") >= 1
    assert _metric(text, "gateway_tokens_total", provider="openai", direction="in") >= 210
    assert _metric(text, "gateway_first_event_seconds_count", provider="openai", mode="native") >= 1
    assert _metric(text, "gateway_provider_seconds_count", provider="openai", stream="false") >= 20
    assert _metric(text, "gateway_open_streams") == 0
    assert "gateway_request_seconds_bucket" in text


def test_one_json_log_line_per_request_without_keys_or_prompts(observed):
    trace_id = "trace-observe-1"
    resp = requests.post(
        observed.url + "/v1/responses",
        json={"model": "gpt-log", "input": "a secret prompt"},
        headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai", "x-portkey-trace-id": trace_id},
        timeout=10,
    )
    assert resp.status_code == 200
    # The line is written when the response is closed, just after its last byte reached the client.
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in observed.output().splitlines() if trace_id in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1
    line = lines[0]
    assert line["status"] == 200 and line["provider"] == "openai" and line["model"] == "gpt-log"
    assert line["mode"] == "native" and line["input_tokens"] == 10 and line["latency_ms"] > 0
    assert re.fullmatch(r"pk:[0-9a-f]{32}", line["tenant"])
    out = observed.output()
    assert KEY not in out and "a secret prompt" not in out


@pytest.mark.slow
def test_a_handler_of_the_host_gets_the_access_log_as_records():
    # The gateway's own handler takes lines without a LogRecord; one the host application set takes records.
    from gateway.observe import Observer, Trace, access_log

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    saved = access_log.handlers[:], access_log.level
    access_log.handlers[:] = [Keep()]
    access_log.setLevel(logging.INFO)
    try:
        Observer().finish(Trace(trace_id="trace-record-1", method="POST", path="/v1/responses"))
    finally:
        access_log.handlers[:] = saved[0]
        access_log.setLevel(saved[1])
    assert len(records) == 1 and records[0].name == "gateway.access"
    assert json.loads(records[0].getMessage())["trace_id"] == "trace-record-1"

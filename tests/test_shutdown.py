"""Graceful shutdown: SIGTERM lets open streams finish and takes no new connections."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
import requests

from tests.conftest import KEY, Gunicorn


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_sigterm_lets_open_streams_finish(gateway_env, fake, worker_class):
    server = Gunicorn(
        {**gateway_env, "GATEWAY_GRACEFUL_TIMEOUT": "20"}, workers=1, threads=4, worker_class=worker_class
    )
    results: list[list[str]] = []
    started = threading.Barrier(3)

    def stream() -> None:
        # 20 words in 10 deltas, 400 ms apart: each stream runs about 4 s.
        body = {
            "model": "m",
            "input": " ".join("w" * (i + 1) for i in range(18)),
            "stream": True,
            "metadata": {"fake_deltas": "10", "fake_gap_ms": "400"},
        }
        headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
        types = []
        with requests.post(server.url + "/v1/responses", json=body, headers=headers, stream=True, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith(b"data: "):
                    types.append(json.loads(line[6:])["type"])
                    if len(types) == 1:
                        started.wait(10)
        results.append(types)

    threads = [threading.Thread(target=stream) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        started.wait(10)  # both streams are open and have their first event
        server.proc.send_signal(signal.SIGTERM)
        # The gevent worker looks at its stop flag once a second; then it closes its listener.
        time.sleep(1.5)
        # While the two streams are still running (seconds more), a new request is not served. The gevent
        # worker refuses it; the gthread worker stops accepting but its listening socket lingers until it
        # exits, so there the connection waits in the kernel's backlog (and is reset at exit).
        served = True
        try:
            requests.get(server.url + "/healthz", timeout=1)
        except (requests.ConnectionError, requests.Timeout):
            served = False
        assert all(t.is_alive() for t in threads), results
        assert not served
        for t in threads:
            t.join(30)
        assert len(results) == 2
        assert all(types[-1] == "response.completed" for types in results), results
        assert server.proc.wait(30) == 0
    finally:
        server.stop()

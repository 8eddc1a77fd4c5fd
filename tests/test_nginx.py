"""deploy/nginx.conf in front of gunicorn, with a real nginx: streamed events arrive one by one through it."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import KEY, ROOT, free_port


@pytest.fixture
def nginx(gateway, tmp_path):
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(binary).exists(), "nginx is required for this test (.ci/run installs it from apt)"
    port = free_port()
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site = site.replace("server 127.0.0.1:8787;", f"server 127.0.0.1:{gateway.port};")
    site = site.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"""daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {tmp_path}/site.conf;
}}
"""
    )
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            requests.get(url + "/healthz", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("nginx did not start: " + (tmp_path / "error.log").read_text()) from None
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def test_events_arrive_one_by_one_through_nginx(nginx, fake):
    body = {
        "model": "m",
        "input": "a b c d e f g h",
        "stream": True,
        "metadata": {"fake_deltas": "4", "fake_gap_ms": "300"},
    }
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
    with requests.post(nginx + "/v1/responses", json=body, headers=headers, stream=True, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = (json.loads(line[6:]) for line in resp.iter_lines() if line.startswith(b"data: "))
        first = next(e for e in events if e["type"] == "response.output_text.delta")
        # The provider is still between deltas: neither nginx nor the gateway held the stream back.
        assert "response.completed" not in fake.sent
        assert first["sequence_number"] == 4
        rest = list(events)
    assert rest[-1]["type"] == "response.completed"


def test_json_and_errors_pass_through_nginx(nginx):
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
    ok = requests.post(nginx + "/v1/responses", json={"model": "m", "input": "hi"}, headers=headers, timeout=10)
    assert ok.status_code == 200 and ok.json()["output"][0]["content"][0]["text"] == "Echo 1: hi"
    bad = requests.post(nginx + "/v1/responses", json={"input": "hi"}, headers=headers, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"

"""Starting the gateway: one line and exit status 2 for a mistake, nothing left behind; the `gateway` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib

import pytest
import requests

from gateway.config import Settings
from gateway.startup import StartupError, check
from tests.conftest import ROOT, Gunicorn, free_port

GATEWAY = str(ROOT / ".venv" / "bin" / "gateway")
BAD_FILES = [
    # (settings file, words the one line must hold)
    ("nope = 1\n", ["gw.toml", "nope", "unknown setting"]),
    ("workers = 'many'\n", ["gw.toml", "workers", "must be an integer"]),
    ("worker_class = 'eventlet'\n", ["gw.toml", "worker_class", "gevent, gthread"]),
    ("bind = [1]\n", ["gw.toml", "bind", "must be a string"]),
    ("workers = \n", ["gw.toml", "not valid TOML", "line 1"]),
    (
        '[providers.my-vllm]\nbase_url = "http://127.0.0.1:9/v1"\napi = "chat"\nkey_requird = false\n',
        ["gw.toml", "[providers.my-vllm] key_requird", "unknown key", "key_required"],
    ),
    ('[providers.x]\nbase_url = "ftp://h/v1"\napi = "chat"\n', ["[providers.x] base_url", "http(s) URL"]),
    ('[providers.x]\nbase_url = "http://h/v1"\napi = "grpc"\n', ["[providers.x] api", "responses, chat"]),
    ('[providers.x]\napi = "chat"\n', ["[providers.x] base_url", "non-empty string"]),
    ('[providers.ollama]\nkey_required = "no"\n', ["[providers.ollama] key_required", "true or false"]),
    ('[keys.a]\ndigest = "sha256:00"\n', ["[keys.a] digest", "64 hex digits"]),
    ('[keys.a]\ndigets = "x"\n', ["[keys.a] digets", "unknown key", "digest, providers"]),
    (
        f'[keys.a]\ndigest = "sha256:{"0" * 64}"\n[keys.a.providers.openai]\napi_kye = "x"\n',
        ["[keys.a.providers.openai] api_kye", "unknown key", "api_key"],
    ),
    (
        f'[keys.a]\ndigest = "sha256:{"0" * 64}"\n[keys.a.providers.opnai]\napi_key = "x"\n',
        ["[keys.a.providers] opnai", "unknown provider"],
    ),
    ('[configs.c]\nstrategy = { mode = "sideways" }\n', ["[configs.c.strategy] mode", "single, fallback, loadbalance"]),
    ('store_url = "sqlite:////nonexistent-dir/x.sqlite3"\n', ["gw.toml", "store_url", "no directory /nonexistent-dir"]),
    ('store_url = "mysql://u:secret@127.0.0.1/x"\n', ["gw.toml", "store_url", "u:***@127.0.0.1", "postgresql://"]),
    ('store_url = "not a url"\n', ["gw.toml", "store_url", "not a database URL"]),
    ("worker_connections = 50\nwebsocket_reserve = 50\n", ["websocket_reserve", "worker_connections - 1 (49)"]),
]


def _env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    # The metrics directory a start makes goes here, so that the test sees exactly what a start leaves.
    env["TMPDIR"] = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env["GATEWAY_STORE_URL"] = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    env.update(extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize(("toml", "words"), BAD_FILES, ids=[w[1] for _, w in BAD_FILES])
def test_a_bad_settings_file_stops_gunicorn_with_one_line(tmp_path, toml, words):
    (tmp_path / "gw.toml").write_text(toml)
    env = _env(tmp_path, GATEWAY_CONFIG=str(tmp_path / "gw.toml"))
    if "store_url" in toml:
        del env["GATEWAY_STORE_URL"]
    ran = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{free_port()}", "wsgi:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 2, ran.stderr
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.stderr
    assert lines[0].startswith("gateway: cannot start: ")
    for word in words:
        assert word in lines[0]
    assert "secret" not in ran.stderr
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.slow
def test_a_store_that_cannot_be_reached_is_one_line_and_not_ready_not_a_failed_start(tmp_path):
    # The settings are right; the database is down (nothing listens on port 1). The gateway starts, says so
    # once, answers /healthz, is not ready, and check-config tells the two apart by its exit status.
    url = "postgresql://u:secret@127.0.0.1:1/x"
    env = _env(tmp_path, GATEWAY_STORE_URL=url)
    ran = subprocess.run([GATEWAY, "check-config"], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1, ran.stderr
    assert ran.stderr.count("\n") == 1
    assert "GATEWAY_STORE_URL" in ran.stderr and "u:***@127.0.0.1:1" in ran.stderr and "refused" in ran.stderr

    server = Gunicorn({"GATEWAY_STORE_URL": url, "TMPDIR": env["TMPDIR"]}, workers=2, threads=4)
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 503
    deadline = time.monotonic() + 10
    while "not ready" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    resp = requests.post(
        server.url + "/v1/responses",
        json={"model": "m", "input": "hi"},
        headers={"x-portkey-provider": "mock", "Authorization": "Bearer demo"},
        timeout=10,
    )
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "store_unavailable"
    out = server.stop()
    # One line from the start-up probe; each worker says it once more when it first finds the store down.
    probe = [line for line in out.splitlines() if line.startswith("gateway: not ready: GATEWAY_STORE_URL: ")]
    assert len(probe) == 1 and "u:***@127.0.0.1:1" in probe[0], out
    assert 1 <= sum("store not ready" in line for line in out.splitlines()) <= 2, out
    assert "Traceback" not in out and "secret" not in out, out


ONE_PASS = """\
retenton = "30d"
retention = "30 days"
log_level = "VERBOSE"
bind = "127.0.0.1;9114"

[providers.my-vllm]
base_url = "http://127.0.0.1:9/v1"
api = "chat"
key_requird = false

[keys.a]
digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
[keys.a.providers.opnai]
api_key = "x"

[configs.c]
provider = "mokc"
"""


def test_every_mistake_is_found_in_one_pass_each_with_where_and_did_you_mean(tmp_path):
    (tmp_path / "gw.toml").write_text(ONE_PASS)
    env = _env(tmp_path, GATEWAY_CONFIG=str(tmp_path / "gw.toml"))
    ran = subprocess.run([GATEWAY, "check-config"], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2
    lines = ran.stderr.splitlines()
    expected = [
        ("retenton: unknown setting", "did you mean 'retention'"),
        ("retention: not an age: '30 days'", "30d"),
        ("log_level: must be one of DEBUG", "'VERBOSE'"),
        ("bind: must be HOST:PORT", "'127.0.0.1;9114'"),
        ("[providers.my-vllm] key_requird: unknown key", "did you mean 'key_required'"),
        ("[keys.a.providers] opnai: unknown provider", "did you mean 'openai'"),
        ("[configs.c] provider: unknown provider 'mokc'", "did you mean 'mock'"),
    ]
    assert len(lines) == len(expected), ran.stderr
    for line, (where, hint) in zip(lines, expected, strict=True):
        assert line.startswith(f"gateway: {tmp_path / 'gw.toml'}: "), line
        assert where in line and hint in line, line


def test_an_environment_variable_at_fault_is_named(tmp_path):
    env = _env(tmp_path, GATEWAY_PROVIDERS__MY_VLLM__KEY_REQUIRD="false")
    ran = subprocess.run([GATEWAY, "check-config"], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2
    assert ran.stderr.strip().startswith("gateway: GATEWAY_PROVIDERS__MY_VLLM__KEY_REQUIRD: unknown key")


@pytest.mark.slow
def test_check_config_prints_the_effective_settings_with_secrets_masked(tmp_path):
    env = _env(
        tmp_path,
        GATEWAY_METRICS_TOKEN="tok-hush-1",
        GATEWAY_KEY_SALT="salt-hush-2",
        GATEWAY_PROVIDERS__OPENAI__API_KEY="sk-hush-3",
        GATEWAY_WORKERS="3",
    )
    ran = subprocess.run([GATEWAY, "check-config"], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "hush" not in ran.stdout
    printed = tomllib.loads(ran.stdout)
    assert printed["workers"] == 3
    assert printed["metrics_token"] == printed["key_salt"] == printed["providers"]["openai"]["api_key"] == "***"
    assert "mock" in ran.stdout.splitlines()[1]  # the catalogue's names


def test_the_example_settings_file_has_every_setting_and_passes_the_checks():
    path = ROOT / "gateway.example.toml"
    example = tomllib.loads(path.read_text())
    defaults = {name: default for name, default, _ in Settings.documented()}
    assert set(example) == set(defaults), "gateway.example.toml is missing or has extra settings"
    for name, default in defaults.items():
        if not isinstance(default, dict):
            assert example[name] == default, f"{name}: the example says {example[name]!r}, the default is {default!r}"
    settings = check({"GATEWAY_CONFIG": str(path)}, store=False)
    assert settings.providers["my-vllm"]["api"] == "chat"
    assert "openai-then-mock" in settings.configs


def test_check_raises_one_line_for_the_library_too():
    with pytest.raises(StartupError, match=r"^GATEWAY_RETRY_AFTER_MAX: must be a number"):
        check({"GATEWAY_RETRY_AFTER_MAX": "soon"}, store=False)


def test_gateway_version_is_the_gateway_s():
    from gateway import __version__

    ran = subprocess.run([GATEWAY, "--version"], capture_output=True, text=True, timeout=30)
    assert ran.stdout.strip() == f"gateway {__version__}"


@pytest.mark.slow
def test_gateway_serve_listens_on_the_port_given(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [GATEWAY, "serve", "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(100):
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # not listening, or its worker still booting
                assert proc.poll() is None, proc.stderr.read().decode()
                subprocess.run(["sleep", "0.2"], check=True)
        assert resp.status_code == 200
        mock = requests.post(
            f"http://127.0.0.1:{port}/v1/responses",
            json={"model": "mock-1", "input": "hi"},
            headers={"x-portkey-provider": "mock", "Authorization": "Bearer demo"},
            timeout=10,
        )
        assert mock.json()["output"][0]["content"][0]["text"] == "Echo 1: hi"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"Listening at: http://127.0.0.1:{port}" in err.decode()
    assert "MonkeyPatchWarning" not in err.decode()
    assert os.listdir(tmp_path / "tmp") == []  # the metrics directory went with the master


def test_dev_server_defaults_to_the_gateways_port():
    from gateway.cli import main

    ctx = main.make_context("gateway", ["run", "--help"], resilient_parsing=True)
    assert ctx.default_map["run"]["port"] == 8787


@pytest.mark.slow
def test_a_reload_with_broken_settings_keeps_serving_and_a_good_one_adds_a_key(tmp_path):
    # SIGHUP is how keys are added and rotated: a typo in the file must not take the instance down.
    from gateway.auth import key_digest

    def key(name: str) -> str:
        return f'[keys.{name}]\ndigest = "{key_digest(name)}"\n[keys.{name}.providers.mock]\napi_key = "unused"\n'

    settings = tmp_path / "gw.toml"
    only_keys = "allow_provider_keys = false\n"
    settings.write_text(only_keys + key("team-a"))
    server = Gunicorn({"GATEWAY_CONFIG": str(settings), "GATEWAY_STORE_URL": f"sqlite:///{tmp_path / 's.db'}"})

    def status(api_key: str) -> int:
        body = {"model": "m", "input": "hi"}
        headers = {"Authorization": f"Bearer {api_key}", "x-portkey-provider": "mock"}
        return requests.post(server.url + "/v1/responses", json=body, headers=headers, timeout=10).status_code

    def reloaded(marker: str) -> None:
        before = server.output().count(marker)
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while server.output().count(marker) == before:
            assert time.monotonic() < deadline, server.output()[-3000:]
            time.sleep(0.1)
        time.sleep(1)  # the old workers are told to go once the new ones boot

    assert status("team-a") == 200
    settings.write_text(only_keys + key("team-a") + key("team-b") + "workres = 2\n")
    reloaded("reload refused")
    assert server.proc.poll() is None
    assert status("team-a") == 200  # the new workers run the settings loaded before
    assert status("team-b") == 401
    refused = [line for line in server.output().splitlines() if "reload refused" in line]
    assert len(refused) == 1 and "workres" in refused[0] and "gw.toml" in refused[0]

    settings.write_text(only_keys + key("team-a") + key("team-b"))
    reloaded("Booting worker")
    deadline = time.monotonic() + 20
    while status("team-b") != 200:
        assert time.monotonic() < deadline, "the good reload did not add the key"
        time.sleep(0.2)
    assert status("team-a") == 200
    out = server.stop()
    assert "Traceback" not in out, out


def test_check_config_shows_every_provider_where_it_is_with_its_secrets_masked(tmp_path):
    (tmp_path / "gw.toml").write_text(
        '[providers.my]\nbase_url = "http://u:pw-hush@127.0.0.1:9/v1"\napi = "chat"\n'
        'headers = { "api-key" = "hdr-hush" }\nquery = { key = "q-hush" }\n'
    )
    env = _env(tmp_path, GATEWAY_CONFIG=str(tmp_path / "gw.toml"))
    ran = subprocess.run([GATEWAY, "check-config", "--no-store"], env=env, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert "hush" not in ran.stdout
    printed = tomllib.loads(ran.stdout)["providers"]
    assert printed["openai"] == {"base_url": "https://api.openai.com/v1", "api": "responses"}  # a built-in one
    assert printed["my"]["base_url"] == "http://u:***@127.0.0.1:9/v1"
    assert printed["my"]["headers"] == {"api-key": "***"} and printed["my"]["query"] == {"key": "***"}


def test_gateway_help_lists_the_gateway_s_commands_not_flask_s():
    ran = subprocess.run([GATEWAY, "--help"], capture_output=True, text=True, timeout=30)
    commands = ran.stdout.split("Commands:", 1)[1]
    names = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert names == {"check-config", "migrate", "purge", "run", "serve", "usage", "worker"}
    assert "--env-file" not in ran.stdout and "--app" not in ran.stdout


@pytest.mark.slow
def test_log_format_json_makes_every_stderr_line_one_json_object(tmp_path):
    import json

    server = Gunicorn(
        {
            "GATEWAY_LOG_FORMAT": "json",
            "GATEWAY_STORE_URL": "postgresql://u:secret@127.0.0.1:1/x",  # not ready: the probe's line too
            "TMPDIR": str(tmp_path),
        },
        workers=1,
        threads=4,
    )
    requests.post(
        server.url + "/v1/responses",
        json={"model": "m", "input": "hi", "store": False},
        headers={"x-portkey-provider": "mock", "Authorization": "Bearer demo"},
        timeout=10,
    )
    deadline = time.monotonic() + 10
    while "not ready" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    out = server.stop()
    lines = [line for line in out.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert all(isinstance(p, dict) for p in parsed)
    assert any("Booting worker" in p.get("message", "") for p in parsed)  # gunicorn's own
    assert any("not ready" in p.get("message", "") for p in parsed)  # the start-up probe's
    assert any(p.get("path") == "/v1/responses" for p in parsed)  # the access log


@pytest.mark.slow
def test_an_install_without_the_clone_runs_under_gunicorn_and_reloads_keys(tmp_path):
    # From any directory: the settings module and the app are the package's own.
    from gateway.auth import key_digest

    def key(name: str) -> str:
        return f'[keys.{name}]\ndigest = "{key_digest(name)}"\n[keys.{name}.providers.mock]\napi_key = "unused"\n'

    settings = tmp_path / "gw.toml"
    settings.write_text("allow_provider_keys = false\n" + key("team-a"))
    env = _env(tmp_path, GATEWAY_CONFIG=str(settings), GATEWAY_WORKERS="1", GATEWAY_BACKGROUND_CONSUMERS="0")
    port = free_port()
    log = (tmp_path / "gunicorn.log").open("wb")
    command = [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf", "-b", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(
        [*command, "gateway.wsgi:app"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def status(api_key: str) -> int:
        headers = {"Authorization": f"Bearer {api_key}", "x-portkey-provider": "mock"}
        body = {"model": "m", "input": "hi", "store": False}
        return requests.post(url + "/v1/responses", json=body, headers=headers, timeout=10).status_code

    def until(check, what: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                if check():
                    return
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, what + ": " + (tmp_path / "gunicorn.log").read_text()[-2000:]
            time.sleep(0.2)

    try:
        until(lambda: status("team-a") == 200, "did not serve")
        assert status("team-b") == 401
        settings.write_text("allow_provider_keys = false\n" + key("team-a") + key("team-b"))
        proc.send_signal(signal.SIGHUP)
        until(lambda: status("team-b") == 200, "the reload did not add the key")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()

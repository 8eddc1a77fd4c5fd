"""Fixtures: a fake provider on 127.0.0.1, settings -> app -> client, and the gateway under gunicorn."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from gateway import create_app
from tests.fake_provider import FakeProvider
from tests.services import PrivatePostgres, PrivateRedis, free_port, missing_programs

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-provider-key"


@pytest.fixture(scope="session")
def fake():
    provider = FakeProvider().start()
    yield provider
    provider.stop()


@pytest.fixture(autouse=True)
def _fresh_fake(request):
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()


@pytest.fixture
def settings(fake, tmp_path):
    return {
        "providers": {"openai": {"base_url": fake.url}, "fakechat": {"base_url": fake.url, "api": "chat"}},
        "store_url": f"sqlite:///{tmp_path / 'store.sqlite3'}",
        "key_salt": "test-salt",
    }


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    close_app(app)


def close_app(app) -> None:
    """Close the app's pooled provider connections and store connections now, not at garbage collection."""
    svc = app.extensions["gateway"]
    svc.upstream.close()
    svc.store.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def headers():
    return {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}


class Gunicorn:
    """The gateway as users run it: ``gunicorn -c gunicorn.conf.py wsgi:app`` in a subprocess."""

    running: ClassVar[set[Gunicorn]] = set()  # started and not yet stopped, so that none outlives its test

    def __init__(self, env: dict[str, str], workers: int = 2, threads: int = 16, worker_class: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        full_env.update(env)
        # `threads` is the concurrency per worker whichever the worker type; None: the default type.
        full_env.update(
            {
                "GATEWAY_WORKERS": str(workers),
                "GATEWAY_THREADS": str(threads),
                "GATEWAY_WORKER_CONNECTIONS": str(threads),
            }
        )
        if worker_class:
            full_env["GATEWAY_WORKER_CLASS"] = worker_class
        # Background consumers only where a test asks for them (tests/test_background.py): each one is a
        # process that would otherwise start beside every server of the suite.
        full_env.setdefault("GATEWAY_BACKGROUND_CONSUMERS", "0")
        # A file, not a pipe: nobody reads a pipe while tests run, and a full one would block gunicorn.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server, closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b", f"127.0.0.1:{self.port}", "wsgi:app"],
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        Gunicorn.running.add(self)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + self.output())
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening, or its workers still booting
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("gunicorn did not become healthy in 30 s")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")

    def stop(self) -> str:
        Gunicorn.running.discard(self)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out = self.output()
        self.log.close()
        return out


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A server a test starts in its body is stopped when the test ends, even when it fails before its own stop:
    a gunicorn left running holds ports and processes (and background consumers) through later tests.
    """
    before = set(Gunicorn.running)
    try:
        return (yield)
    finally:
        for server in Gunicorn.running - before:
            server.stop()


def pytest_sessionfinish(session, exitstatus):
    for server in list(Gunicorn.running):
        server.stop()


@pytest.fixture(scope="session")
def gateway_env(fake, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "gateway.sqlite3"
    return {
        "GATEWAY_PROVIDERS__OPENAI__BASE_URL": fake.url,
        "GATEWAY_PROVIDERS__FAKECHAT__BASE_URL": fake.url,
        "GATEWAY_PROVIDERS__FAKECHAT__API": "chat",
        "GATEWAY_STORE_URL": f"sqlite:///{store}",
        "GATEWAY_KEY_SALT": "test-salt",
    }


@pytest.fixture(scope="session")
def gateway(gateway_env):
    server = Gunicorn(gateway_env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def scripted():
    """tests/scripted_model.py's model, on a free port of 127.0.0.1."""
    from tests.scripted_model import ScriptedModel

    model = ScriptedModel().start()
    yield model
    model.stop()


@pytest.fixture(scope="module")
def scripted_gateway(scripted, tmp_path_factory):
    """The gateway under gunicorn before the scripted model, as an emulated provider (``scriptchat``) and as
    a native one (``scriptnative``): the real clients' tests run one scenario on both.
    """
    server = Gunicorn(scripted_env(scripted, tmp_path_factory.mktemp("scripted") / "gateway.sqlite3"))
    yield server
    server.stop()


def scripted_env(scripted, store) -> dict[str, str]:
    """The settings of a gateway before the scripted model (both provider kinds), its store at ``store``."""
    return {
        "GATEWAY_PROVIDERS__SCRIPTCHAT__BASE_URL": scripted.url,
        "GATEWAY_PROVIDERS__SCRIPTCHAT__API": "chat",
        "GATEWAY_PROVIDERS__SCRIPTNATIVE__BASE_URL": scripted.url,
        "GATEWAY_PROVIDERS__SCRIPTNATIVE__API": "responses",
        "GATEWAY_STORE_URL": f"sqlite:///{store}",
        "GATEWAY_KEY_SALT": "test-salt",
    }


def _server_url(variable: str, server_class: type):
    """The URL in ``variable``, else a private server's, started now and stopped when the session ends."""
    if os.environ.get(variable):
        yield os.environ[variable]
        return
    server = server_class().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_url():
    """A PostgreSQL server's URL: ``AIGW_TEST_PG_URL``, else a private server started for this session."""
    for url in _server_url("AIGW_TEST_PG_URL", PrivatePostgres):
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)  # the driver the gateway uses


@pytest.fixture(scope="session")
def redis_url():
    """A Redis server's URL: ``AIGW_TEST_REDIS_URL``, else a private server started for this session."""
    yield from _server_url("AIGW_TEST_REDIS_URL", PrivateRedis)


@pytest.fixture(scope="session")
def pg_schema(pg_url):
    """A schema of our own in the server's `test` database, dropped at the end: other runs are left alone."""
    import uuid

    import sqlalchemy as sa

    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    sep = "&" if "?" in pg_url else "?"
    yield f"{pg_url}{sep}options=-csearch_path%3D{name}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
    engine.dispose()


def pg_address(url: str) -> tuple[str, int]:
    """The host and port of a PostgreSQL URL."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


def pg_via(url: str, port: int) -> str:
    """The same PostgreSQL URL, reached through 127.0.0.1:``port`` (a proxy in front of the server)."""
    import sqlalchemy as sa

    return sa.make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


_NEEDS_PG = {"pg_url", "pg_schema", "store_url", "private_pg"}


def pytest_collection_modifyitems(config, items):
    """Name every missing prerequisite of the selected tests in one line, before any of them runs."""
    names = set()
    for item in items:
        names.update(getattr(item, "fixturenames", ()))
    missing = missing_programs(postgres=bool(names & _NEEDS_PG), redis=bool(names & {"redis_url", "private_redis"}))
    has_nginx = shutil.which("nginx") or Path("/usr/sbin/nginx").exists()
    if any("nginx" in item.nodeid for item in items) and not has_nginx:
        missing.append("nginx (apt-get install nginx)")
    has_node = shutil.which("node") and (ROOT / "tests" / "node_client" / "node_modules").is_dir()
    if any(item.get_closest_marker("node") for item in items) and not has_node:
        missing.append("the Node test client (apt-get install nodejs npm && (cd tests/node_client && npm ci))")
    if missing:
        pytest.exit("missing prerequisites: " + "; ".join(missing) + " (bash tests/run installs them)", returncode=4)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    url = request.getfixturevalue("pg_schema")
    import sqlalchemy as sa

    from gateway.store.tables import metadata

    # Each test starts from empty tables in the session's schema.
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    engine.dispose()
    return url


@pytest.fixture
def make_sdk():
    """openai.OpenAI clients for the test, closed at its end (their pooled sockets with them)."""
    import openai

    clients = []

    def make(base_url: str, api_key: str = KEY, provider: str | None = "openai") -> openai.OpenAI:
        headers = {"x-portkey-provider": provider} if provider else None
        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, default_headers=headers)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()

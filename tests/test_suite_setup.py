"""The test suite's own set-up: private servers, prerequisites named up front, no process outliving its test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import redis
import sqlalchemy as sa

from tests.conftest import ROOT


def _pytest(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_postgresql_and_redis_are_private_servers_of_this_session(pg_url, redis_url):
    if os.environ.get("AIGW_TEST_PG_URL") or os.environ.get("AIGW_TEST_REDIS_URL"):
        pytest.fail("this test checks the private servers; unset AIGW_TEST_PG_URL and AIGW_TEST_REDIS_URL")
    assert sa.make_url(pg_url).port != 5432
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        data_dir = conn.execute(sa.text("SHOW data_directory")).scalar()
    engine.dispose()
    assert "/aigw-pg-" in data_dir
    client = redis.Redis.from_url(redis_url)
    assert client.config_get("dir")["dir"].rsplit("/", 1)[-1].startswith("aigw-redis-")
    assert client.config_get("save")["save"] == ""
    client.close()


def test_a_missing_server_program_is_named_before_any_test_runs():
    # Only the virtualenv on PATH: no redis-server there (PostgreSQL is found in Debian's own directory).
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_TEST_")}
    env["PATH"] = os.path.dirname(sys.executable)
    done = _pytest(["tests/test_background.py::test_two_gateways_on_one_postgresql_and_redis"], env)
    assert done.returncode == 4, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "missing prerequisites: redis-server (apt-get install redis-server)" in out
    assert "passed" not in out and "failed" not in out


@pytest.mark.slow
def test_a_gunicorn_of_a_failing_test_is_stopped_with_it(tmp_path):
    pid_file = tmp_path / "pid"
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        textwrap.dedent(f"""
        from tests.conftest import Gunicorn

        def test_fails_with_its_server_running(gateway_env):
            server = Gunicorn(gateway_env, workers=1, threads=2)
            open({str(pid_file)!r}, "w").write(str(server.proc.pid))
            assert False, "fails before its own stop"
        """)
    )
    done = _pytest(["-p", "tests.conftest", "--rootdir", str(ROOT), "-c", str(ROOT / "setup.cfg"), str(probe)])
    assert "1 failed" in done.stdout, done.stdout + done.stderr
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail("the failing test's gunicorn outlived it")

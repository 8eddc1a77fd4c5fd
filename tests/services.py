"""Private, throwaway PostgreSQL and Redis servers for a test session, on free ports of 127.0.0.1.

Each lives in a temporary directory that is removed when it stops, so a run neither needs nor touches the
machine's own servers. ``AIGW_TEST_PG_URL`` and ``AIGW_TEST_REDIS_URL`` point the tests at existing servers
instead (not ``GATEWAY_*``: the gateway refuses unknown variables of its own prefix).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else where Debian's packages put it (newest version first)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key, reverse=True)
    return versions[0] if versions else None


def _version_key(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


def missing_programs(*, postgres: bool, redis: bool) -> list[str]:
    """The server programs that these tests need and this machine lacks, as install hints."""
    missing = []
    has_pg = postgres_bin("initdb") and postgres_bin("postgres")
    if postgres and not os.environ.get("AIGW_TEST_PG_URL") and not has_pg:
        missing.append("PostgreSQL's initdb and postgres (apt-get install postgresql)")
    if redis and not os.environ.get("AIGW_TEST_REDIS_URL") and not shutil.which("redis-server"):
        missing.append("redis-server (apt-get install redis-server)")
    return missing


# A throwaway server: nothing needs to survive a power cut, and several gunicorns open many connections at once.
_THROWAWAY = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=300")


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} in {timeout:.0f} s")


class PrivatePostgres:
    """``initdb`` in a temp dir, then ``postgres`` on a free port, trust auth, database ``test``.

    As root it runs as ``nobody`` (PostgreSQL refuses to run as root). A test can stop the whole server
    (``pause``/``resume``, SIGSTOP/SIGCONT) as a stalled host would.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aigw-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._user: dict = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/test"

    def start(self) -> PrivatePostgres:
        data, log = self.dir / "data", self.dir / "server.log"
        self._log = log.open("wb")
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "TZ": "UTC"}
        subprocess.run(
            [postgres_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=self.dir,
            env=env,
            **self._user,
        )
        # The socket stays in the server's own directory, not in /var/run.
        self.proc = subprocess.Popen(
            [postgres_bin("postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.dir)]
            + [arg for opt in _THROWAWAY for arg in ("-c", opt)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            env=env,
            start_new_session=True,
            **self._user,
        )
        _wait_port(self.port, self.proc, "PostgreSQL", log)
        deadline = time.monotonic() + 30
        while True:  # listening comes before accepting connections
            address = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
            done = subprocess.run(
                [postgres_bin("createdb") or "createdb", *address, "test"],
                capture_output=True,
                env=env,
            )
            if done.returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {done.stderr.decode(errors='replace')}")
            time.sleep(0.1)

    def pause(self) -> None:
        """Stop every process of the server (SIGSTOP): connections stay open and nothing answers.

        The postmaster first, so that it forks no one meanwhile; then each child, which PostgreSQL puts in
        a process group of its own (setsid), so that signalling the postmaster's group misses them.
        """
        os.kill(self.proc.pid, signal.SIGSTOP)
        for pid in self._children():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self._children():
            os.kill(pid, signal.SIGCONT)
        os.kill(self.proc.pid, signal.SIGCONT)

    def _children(self) -> list[int]:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return [int(pid) for pid in f.read().split()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: backends are told to leave at once
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """``redis-server`` on a free port, keeping nothing on disk."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aigw-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        log = self.dir / "server.log"
        self._log = log.open("ab")
        options = {"port": str(self.port), "bind": "127.0.0.1", "save": "", "appendonly": "no", "dir": str(self.dir)}
        self.proc = subprocess.Popen(
            ["redis-server", *(arg for name, value in options.items() for arg in (f"--{name}", value))],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_port(self.port, self.proc, "Redis", log)
        return self

    def down(self) -> None:
        """The server goes away (``start`` brings it back on the same port, empty)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)

"""The stack every benchmark here measures: the test suite's fake provider, and the gateway under gunicorn
pointed at it (provider `openai` native, `fakechat` emulated), with a throwaway SQLite store."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import Gunicorn
from tests.fake_provider import FakeProvider


@contextlib.contextmanager
def stack(workers: int = 2, threads: int = 64) -> Iterator[tuple[FakeProvider, Gunicorn]]:
    fake = FakeProvider().start()
    store = f"/tmp/gateway-bench-{os.getpid()}.sqlite3"
    gw = Gunicorn(
        {
            "GATEWAY_PROVIDERS__OPENAI__BASE_URL": fake.url,
            "GATEWAY_PROVIDERS__FAKECHAT__BASE_URL": fake.url,
            "GATEWAY_PROVIDERS__FAKECHAT__API": "chat",
            "GATEWAY_STORE_URL": f"sqlite:///{store}",
        },
        workers=workers,
        threads=threads,
    )
    try:
        yield fake, gw
    finally:
        gw.stop()
        fake.stop()
        for suffix in ("", "-wal", "-shm"):
            Path(store + suffix).unlink(missing_ok=True)

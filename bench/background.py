#!/usr/bin/env python3
"""Background responses under load: many concurrent background runs of 2-second streams.

    python bench/background.py [--runs 200] [--provider fakechat|openai] [--consumers 1] [--concurrency 200]

Starts bench/fake_upstream.py (20 deltas 100 ms apart after 100 ms: a 2-second stream) and the gateway under
gunicorn as `gateway serve` runs it (its master starts the consumers), SQLite store and queue. Then creates
``--runs`` background responses at once, and watches the store (one query every 10 ms) for each run's first
event stored by its consumer (``response.in_progress``, after the two written at create) and its end.

Reports: create latency (p50/p99), time from create to the first stored event of the run (p50/p99), time to
the last run's end, events and store writes per run (from the consumers' log), and the CPU of every gateway
process (workers, consumers, master) per run. Before the creates it measures the idle consumers' CPU.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, UPSTREAM, UPSTREAM_KEY, Process, cpu_seconds, fake_upstream

DELTAS, FIRST_MS, GAP_MS = 20, 100, 100


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--provider", default="fakechat", choices=["fakechat", "openai"])
    parser.add_argument("--consumers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=200, help="background_concurrency (runs per consumer)")
    parser.add_argument("--workers", type=int, default=0, help="gunicorn workers (0: the default)")
    args = parser.parse_args()

    upstream = fake_upstream(DELTAS, FIRST_MS, GAP_MS)
    store_dir = tempfile.mkdtemp(prefix="gateway-bench-bg-")
    store = f"{store_dir}/gateway.sqlite3"
    env = {
        "GATEWAY_BIND": "127.0.0.1:18181",
        "GATEWAY_PROVIDERS__OPENAI__BASE_URL": UPSTREAM,
        "GATEWAY_PROVIDERS__FAKECHAT__BASE_URL": UPSTREAM,
        "GATEWAY_PROVIDERS__FAKECHAT__API": "chat",
        "GATEWAY_STORE_URL": f"sqlite:///{store}",
        "GATEWAY_BACKGROUND_CONSUMERS": str(args.consumers),
        "GATEWAY_BACKGROUND_CONCURRENCY": str(args.concurrency),
        "GATEWAY_BACKGROUND_MAX_PER_TENANT": "0",
    }
    if args.workers:
        env["GATEWAY_WORKERS"] = str(args.workers)
    gateway = Process(
        "gateway",
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        "http://127.0.0.1:18181/healthz",
        env=env,
        cwd=ROOT,
    )
    try:
        time.sleep(3)  # consumers boot
        idle0 = cpu_seconds(gateway.pids())
        time.sleep(5)
        idle = (cpu_seconds(gateway.pids()) - idle0) / 5
        print(f"idle: gateway processes use {idle * 100:.1f}% of a core with no work ({len(gateway.pids())} processes)")

        headers = {
            "Authorization": f"Bearer {UPSTREAM_KEY}",
            "x-portkey-provider": args.provider,
            "Content-Type": "application/json",
        }
        body = orjson.dumps({"model": "gpt-4o-mini", "input": "Tell me a story", "background": True})
        created: dict[str, tuple[float, float]] = {}  # id -> (sent, answered)

        def create(_: int) -> None:
            sent = time.monotonic()
            req = urllib.request.Request("http://127.0.0.1:18181/v1/responses", data=body, headers=headers)
            with urllib.request.urlopen(req, timeout=30) as resp:
                data = orjson.loads(resp.read())
            created[data["id"]] = (sent, time.monotonic())

        # One at a time first: the latency of a lone run, without a burst's queueing.
        db = sqlite3.connect(store, timeout=5)
        lone = []
        for _ in range(5):
            sent = time.monotonic()
            req = urllib.request.Request("http://127.0.0.1:18181/v1/responses", data=body, headers=headers)
            with urllib.request.urlopen(req, timeout=30) as resp:
                rid = orjson.loads(resp.read())["id"]
            taken = stored = None
            while stored is None and time.monotonic() - sent < 10:
                if (
                    taken is None
                    and db.execute("SELECT status FROM gw_runs WHERE response_id = ?", (rid,)).fetchone()[0] != "queued"
                ):
                    taken = time.monotonic()
                if db.execute("SELECT 1 FROM gw_events WHERE response_id = ? AND seq = 2", (rid,)).fetchone():
                    stored = time.monotonic()
                time.sleep(0.002)
            lone.append(((taken or sent) - sent, (stored or sent) - sent))
            time.sleep(1)
        db.close()
        print(
            "one run at a time: create -> taken by a consumer "
            f"{statistics.median(t for t, _ in lone) * 1000:.0f} ms, -> first stored event "
            f"{statistics.median(f for _, f in lone) * 1000:.0f} ms (median of 5; the provider's stream opens in "
            f"{FIRST_MS} ms)"
        )

        cpu0 = cpu_seconds(gateway.pids())
        start = time.monotonic()
        first: dict[str, float] = {}
        ended: dict[str, float] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(args.runs, 256)) as pool:
            futures = [pool.submit(create, i) for i in range(args.runs)]
            db = sqlite3.connect(store, timeout=5)
            while (len(created) < args.runs or len(ended) < args.runs) and time.monotonic() - start < 120:
                now = time.monotonic()
                for (rid,) in db.execute("SELECT response_id FROM gw_events WHERE seq = 2"):
                    if rid in created:
                        first.setdefault(rid, now)
                for (rid,) in db.execute(
                    "SELECT response_id FROM gw_runs WHERE status NOT IN ('queued', 'in_progress')"
                ):
                    if rid in created:
                        ended.setdefault(rid, now)
                time.sleep(0.01)
            for f in futures:
                f.result()
        cpu = cpu_seconds(gateway.pids()) - cpu0
        statuses: dict[str, int] = {}
        for rid, status in db.execute("SELECT response_id, status FROM gw_runs"):
            if rid in created:
                statuses[status] = statuses.get(status, 0) + 1
        db.close()
        create_ms = [(a - s) * 1000 for s, a in created.values()]
        to_first = [(first[r] - created[r][0]) * 1000 for r in created if r in first]
        log = Path(gateway.log.name).read_text(errors="replace")
        counts = [(int(e), int(w)) for e, w in re.findall(r"\((\d+) events in (\d+) writes\)", log)]
        print(f"{args.runs} background runs on {args.provider}, {args.consumers} consumer(s) x {args.concurrency}")
        print(f"  statuses: {statuses}")
        print(f"  create answered: p50 {_pct(create_ms, 0.5):.1f} ms, p99 {_pct(create_ms, 0.99):.1f} ms")
        print(
            f"  create -> first stored event of the run: p50 {_pct(to_first, 0.5):.0f} ms, "
            f"p99 {_pct(to_first, 0.99):.0f} ms (store polled every 10 ms)"
        )
        print(f"  all ended after {max(ended.values(), default=start) - start:.2f} s (a run streams for 2.0 s)")
        if counts:
            print(
                f"  per run: {statistics.mean(e for e, _ in counts):.1f} events in "
                f"{statistics.mean(w for _, w in counts):.1f} store writes"
            )
        print(f"  gateway CPU: {cpu:.2f} s in all, {cpu / args.runs * 1000:.1f} ms per run")
    finally:
        gateway.stop()
        upstream.stop()
        shutil.rmtree(store_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

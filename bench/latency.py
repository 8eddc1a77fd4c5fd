#!/usr/bin/env python3
"""Added latency of the gateway: the same non-streaming request direct to a fake provider and through
the gateway under gunicorn, at several concurrencies. Bounded: a fixed number of requests per step.

    python bench/latency.py [--requests 2000] [--concurrency 1,16] [--workers 2] [--threads 64]

Everything runs on 127.0.0.1; the fake provider is the test suite's (tests/fake_provider.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import threading
import time

import requests
from _stack import stack

BODY = {"model": "gpt-4o-mini", "input": "Say hello in one short sentence.", "store": False}
HEADERS = {"Authorization": "Bearer sk-bench", "x-portkey-provider": "openai"}


def run_step(url: str, concurrency: int, total: int, body: dict, headers: dict) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_worker = total // concurrency

    def worker() -> None:
        session = requests.Session()
        mine = []
        for _ in range(per_worker):
            t0 = time.perf_counter()
            resp = session.post(url, json=body, headers=headers, timeout=30)
            mine.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {resp.status_code} {resp.text[:200]}")
        with lock:
            latencies.extend(mine)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(worker) for _ in range(concurrency)]:
            f.result()
    return latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--store", action="store_true", help="let the gateway record every response (store: true)")
    parser.add_argument(
        "--emulated",
        action="store_true",
        help="through the Chat Completions emulation (direct = the fake's /chat/completions)",
    )
    args = parser.parse_args()
    if args.store:
        BODY["store"] = True

    with stack(args.workers, args.threads) as (fake, gw):
        gateway_headers = {**HEADERS, "x-portkey-provider": "fakechat" if args.emulated else "openai"}
        if args.emulated:
            chat_body = {"model": BODY["model"], "messages": [{"role": "user", "content": BODY["input"]}]}
            direct = (fake.url + "/chat/completions", chat_body, HEADERS)
        else:
            direct = (fake.url + "/responses", BODY, HEADERS)
        targets = {"direct": direct, "gateway": (gw.url + "/v1/responses", BODY, gateway_headers)}
        print(
            f"{args.requests} requests per step, gunicorn {args.workers} workers x {args.threads} threads, "
            f"store {'on' if args.store else 'off'}, {'emulated' if args.emulated else 'native'}"
        )
        print("| c | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms | gateway req/s |")
        print("|---|---|---|---|---|")
        for c in [int(x) for x in args.concurrency.split(",")]:
            for target in targets.values():
                run_step(target[0], c, min(200, args.requests), *target[1:])  # warm-up: pools, imports, caches
            results = {}
            for name, target in targets.items():
                t0 = time.perf_counter()
                lat = run_step(target[0], c, args.requests, *target[1:])
                results[name] = (pct(lat, 0.5), pct(lat, 0.99), len(lat) / (time.perf_counter() - t0))
            d, g = results["direct"], results["gateway"]
            print(
                f"| {c} | {d[0]:.2f} / {d[1]:.2f} | {g[0]:.2f} / {g[1]:.2f} | "
                f"+{g[0] - d[0]:.2f} / +{g[1] - d[1]:.2f} | {g[2]:.0f} |"
            )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""WebSocket mode against SSE, in one run: many open sockets each running sequential ~2-second responses.

    python bench/websocket.py [--users 500] [--seconds 30] [--provider openai|fakechat]

Starts bench/fake_upstream.py (20 deltas 100 ms apart after 100 ms: a 2-second response) and the gateway
under gunicorn (its defaults: gevent, one worker per core plus one), then for the same users and duration:
``--users`` WebSockets on /v1/responses, each sending response.create after response.create; then as many
SSE users, each POSTing stream after stream on a keep-alive connection. For each: turns completed, time to
the first text delta (p50, p99; the fake's own 100 ms included), the gateway's CPU per turn (all its
processes, from /proc) and its RSS at the end of the phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # the benchmark helpers live beside this script
    Process,
    cpu_seconds,
    fake_upstream,
    gateway,
    rss_mb,
    run_async,
    streams,
)

DELTAS, FIRST_MS, GAP_MS = 20, 100, 100


async def socket_user(url: str, headers: dict, body: dict, delay: float, until: float) -> list[dict]:
    """One client: a socket opened once, then response.create after response.create until ``until``."""
    from websockets.asyncio.client import connect

    await asyncio.sleep(delay)
    runs: list[dict] = []
    frame = json.dumps({"type": "response.create", **body})
    try:
        async with connect(url, additional_headers=headers, max_size=None, compression=None) as ws:
            while time.monotonic() < until:
                t0 = time.monotonic()
                run: dict = {"start": t0, "ok": False, "deltas": 0}
                await ws.send(frame)
                while True:
                    event = orjson.loads(await ws.recv())
                    kind = event["type"]
                    if kind == "response.output_text.delta":
                        run["deltas"] += 1
                        run.setdefault("ttft", time.monotonic() - t0)
                    elif kind in ("response.completed", "response.failed", "error"):
                        run["ok"] = kind == "response.completed"
                        break
                run["end"] = time.monotonic()
                runs.append(run)
    except Exception as exc:  # a broken socket is counted, not fatal to the run
        now = time.monotonic()
        runs.append({"start": now, "end": now, "ok": False, "deltas": 0, "error": type(exc).__name__})
    return runs


async def sockets(url: str, headers: dict, body: dict, users: int, seconds: float) -> dict:
    ramp = min(2.5, users / 400)
    until = time.monotonic() + ramp + seconds
    per_user = await asyncio.wait_for(
        asyncio.gather(*(socket_user(url, headers, body, ramp * i / users, until) for i in range(users))),
        ramp + seconds + 120,
    )
    runs = [r for user in per_user for r in user]
    ok = [r for r in runs if r["ok"] and r["deltas"] == DELTAS]

    def p(q: float) -> float | None:
        values = sorted(r["ttft"] for r in ok if "ttft" in r)
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else None

    return {
        "ok": len(ok),
        "count": len(runs),
        "ttft_p50": p(0.5),
        "ttft_p99": p(0.99),
        "errors": sorted({r.get("error", "incomplete") for r in runs if r not in ok}),
    }


def phase(name: str, proc: Process, run) -> dict:
    pids = proc.pids()
    before = cpu_seconds(pids)
    result = run_async(run)
    result["cpu_s"] = cpu_seconds(proc.pids()) - before
    result["cpu_ms_per_turn"] = result["cpu_s"] * 1000 / max(1, result["ok"])
    result["rss_mb"] = sum(rss_mb(p) for p in proc.pids())
    result["name"] = name
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--provider", default="openai", choices=["openai", "fakechat"])
    args = parser.parse_args()

    upstream = fake_upstream(DELTAS, FIRST_MS, GAP_MS)
    body = {"model": "m", "input": "hello", "store": False}
    try:
        with gateway(emulated=args.provider == "fakechat", workers=0) as target:
            proc, headers = target["proc"], target["headers"]
            ws_url = target["url"].replace("http://", "ws://") + "/responses"
            results = [
                phase("websocket", proc, sockets(ws_url, headers, body, args.users, args.seconds)),
                phase(
                    "sse",
                    proc,
                    streams(
                        target["url"] + "/responses",
                        headers,
                        {**body, "stream": True},
                        False,
                        args.users,
                        args.seconds,
                        DELTAS,
                    ),
                ),
            ]
    finally:
        upstream.stop()

    print(f"{args.users} users, {args.seconds:g} s each way, provider {args.provider}, 2-second responses\n")
    print("| transport | turns ok / run | first delta p50 | p99 | CPU per turn | gateway RSS | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['name']} | {r['ok']} / {r['count']} | {r['ttft_p50'] or 0:.1f} ms | {r['ttft_p99'] or 0:.1f} ms "
            f"| {r['cpu_ms_per_turn']:.2f} ms | {r['rss_mb']:.0f} MB | {', '.join(r['errors']) or '-'} |"
        )
    ws, sse = results
    if ws["ttft_p50"] and sse["ttft_p50"]:
        print(f"\nfirst delta, socket minus SSE: p50 {ws['ttft_p50'] - sse['ttft_p50']:+.1f} ms, "
              f"p99 {ws['ttft_p99'] - sse['ttft_p99']:+.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time to first event of an emulated stream vs the provider's own first chunk, and the same for native.

    python bench/stream_ttfb.py [--streams 100] [--first-ms 100]

The fake provider waits --first-ms before its first text; sequential streams, all on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests
from _stack import stack

HEADERS = {"Authorization": "Bearer sk-bench"}
PROMPT = "Tell me a short story about a gateway."


def first_times(url: str, body: dict, headers: dict, marker: bytes) -> tuple[float, float]:
    """(ms to the first body byte, ms to the first line containing ``marker``)."""
    t0 = time.perf_counter()
    first_byte = None
    with requests.post(url, json=body, headers=headers, stream=True, timeout=30) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if first_byte is None:
                first_byte = (time.perf_counter() - t0) * 1000
            if marker in line:
                first_text = (time.perf_counter() - t0) * 1000
                for _ in resp.iter_lines():
                    pass
                return first_byte, first_text
    raise RuntimeError(f"{url}: no {marker!r}")


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{statistics.median(ordered):.1f} / {ordered[int(0.99 * (len(ordered) - 1))]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--first-ms", type=int, default=100)
    args = parser.parse_args()
    with stack() as (fake, gw):
        fake.knobs.update({"first_ms": args.first_ms, "gap_ms": 5, "deltas": 10})
        run(fake, gw, args.streams, args.first_ms)


def run(fake, gw, streams: int, first_ms: int) -> None:
    chat_body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    resp_body = {"model": "m", "stream": True, "input": PROMPT}
    cases = {
        "direct chat (first content chunk)": (fake.url + "/chat/completions", chat_body, HEADERS, b'"content": "E'),
        "gateway emulated (first output_text.delta)": (
            gw.url + "/v1/responses",
            resp_body,
            {**HEADERS, "x-portkey-provider": "fakechat"},
            b"output_text.delta",
        ),
        "direct responses (first output_text.delta)": (
            fake.url + "/responses",
            resp_body,
            HEADERS,
            b"output_text.delta",
        ),
        "gateway native (first output_text.delta)": (
            gw.url + "/v1/responses",
            resp_body,
            {**HEADERS, "x-portkey-provider": "openai"},
            b"output_text.delta",
        ),
    }
    print(f"{streams} sequential streams each, provider's first text after {first_ms} ms")
    print("| path | first byte p50 / p99 ms | first text p50 / p99 ms |\n|---|---|---|")
    for name, (url, body, headers, marker) in cases.items():
        for _ in range(5):
            first_times(url, body, headers, marker)  # warm-up
        samples = [first_times(url, body, headers, marker) for _ in range(streams)]
        print(f"| {name} | {summary([s[0] for s in samples])} | {summary([s[1] for s in samples])} |", flush=True)


if __name__ == "__main__":
    main()

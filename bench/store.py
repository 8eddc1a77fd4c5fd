#!/usr/bin/env python3
"""Store benchmark: GET by id and one input_items page among N stored responses, and a chain walk of
1,000 turns; a conversation of 1,000 turns (appending a turn, listing a page) with the conversation tables
nearly empty and again beside N other conversation items; background runs (queue, append events, replay,
followers' progress, expired leases) with their tables empty and again beside N events of other runs; on
SQLite and PostgreSQL. Bounded: fixed row and operation counts.

    python bench/store.py [--rows 1000000] [--backends sqlite,postgresql]
        [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

PostgreSQL runs in a schema of its own that is dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import orjson
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.background import events as bg_events
from gateway.store import Store, input_items_of
from gateway.store.tables import INPUT, OUTPUT, conversation_items, conversations, events, items, responses, runs

BATCH = 5000


def fill(store: Store, rows: int) -> list[str]:
    """rows responses across 1,000 tenants, each with 2 input items and 1 output item."""
    ids = []
    body = orjson.dumps({"object": "response", "status": "completed", "output": [], "model": "m"}).decode()
    item = orjson.dumps({"type": "message", "role": "user", "content": "hello there"}).decode()
    now = time.time()
    t0 = time.perf_counter()
    for start in range(0, rows, BATCH):
        resp_rows, item_rows = [], []
        for n in range(start, min(rows, start + BATCH)):
            rid = f"resp_{n:012d}{uuid.uuid4().hex[:8]}"
            ids.append(rid)
            resp_rows.append(
                {
                    "id": rid,
                    "tenant": f"t{n % 1000}",
                    "provider": "openai",
                    "mode": "native",
                    "model": "m",
                    "status": "completed",
                    "previous_response_id": None,
                    "created_at": now,
                    "body": body,
                }
            )
            for kind, pos in ((INPUT, 0), (INPUT, 1), (OUTPUT, 0)):
                item_rows.append(
                    {
                        "response_id": rid,
                        "kind": kind,
                        "position": pos,
                        "item_id": f"msg_{n}_{kind}_{pos}",
                        "body": item,
                    }
                )
        with store.engine.begin() as conn:
            conn.execute(responses.insert(), resp_rows)
            conn.execute(items.insert(), item_rows)
        done = min(rows, start + BATCH)
        if done % 100_000 == 0 or done == rows:
            print(f"  filled {done} responses ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return ids


def chain(store: Store, turns: int) -> str:
    prev = None
    for i in range(turns):
        rid = f"resp_chain_{uuid.uuid4().hex}"
        store.record(
            tenant="t-chain",
            provider="openai",
            mode="native",
            response={
                "id": rid,
                "previous_response_id": prev,
                "output": [{"type": "message", "id": f"msg_o_{i}", "role": "assistant", "content": []}],
            },
            input_items=input_items_of(f"turn {i}"),
        )
        prev = rid
    return prev


def fill_conversations(store: Store, rows: int) -> None:
    """rows conversation items across rows / 10 conversations of 1,000 tenants: the table around the one measured."""
    item = orjson.dumps({"type": "message", "role": "user", "content": "hello there"}).decode()
    now = time.time()
    for start in range(0, rows // 10, BATCH // 10):
        conv_rows, item_rows = [], []
        for n in range(start, min(rows // 10, start + BATCH // 10)):
            cid = f"conv_fill_{n:012d}"
            conv_rows.append(
                {
                    "id": cid,
                    "tenant": f"t{n % 1000}",
                    "created_at": now,
                    "updated_at": now,
                    "next_position": 10,
                    "meta": "{}",
                }
            )
            item_rows += [
                {"conversation_id": cid, "position": p, "kind": INPUT, "item_id": f"msg_{n}_{p}", "body": item}
                for p in range(10)
            ]
        with store.engine.begin() as conn:
            conn.execute(conversations.insert(), conv_rows)
            conn.execute(conversation_items.insert(), item_rows)


def conversation(store: Store, name: str, table_rows: int) -> None:
    """A conversation of 1,000 turns, each recorded with its conversation; then its pages, read."""
    conv = store.conversations.create("t-conv", {}, [])
    appends = []
    for i in range(1000):
        response = {
            "id": f"resp_conv_{uuid.uuid4().hex}",
            "status": "completed",
            "output": [{"type": "message", "id": f"msg_{uuid.uuid4().hex}", "role": "assistant", "content": []}],
        }
        t0 = time.perf_counter()
        store.record(
            tenant="t-conv",
            provider="openai",
            mode="emulated",
            response=response,
            input_items=input_items_of(f"turn {i}"),
            conversation=conv.id,
        )
        appends.append((time.perf_counter() - t0) * 1000)
    for label, part in (("turns 1-100", appends[:100]), ("turns 901-1,000", appends[900:])):
        part = sorted(part)
        print(
            f"| {name} | append a turn to a conversation, {label} | {table_rows:,} | "
            f"{statistics.median(part):.3f} | {part[int(0.99 * len(part)) - 1]:.3f} |",
            flush=True,
        )
    middle = store.conversations.list_items("t-conv", conv.id, limit=100, order="asc")[0][-1]["id"]
    for label, kwargs in (
        ("newest page (20)", {}),
        ("page after an item, 1,000 turns in", {"order": "asc", "after": middle}),
    ):
        p50, p99 = timed(lambda kw=kwargs: store.conversations.list_items("t-conv", conv.id, **kw), 1000)
        print(f"| {name} | conversation items: {label} | {table_rows:,} | {p50:.3f} | {p99:.3f} |", flush=True)


def fill_events(store: Store, rows: int) -> None:
    """rows events across rows / 30 ended background runs, a tenth of them the measured tenant's."""
    body = orjson.dumps({"type": "response.output_text.delta", "delta": "hello"}).decode()
    now = time.time()
    per_run = 30
    for start in range(0, rows // per_run, BATCH // per_run):
        run_rows, event_rows = [], []
        for n in range(start, min(rows // per_run, start + BATCH // per_run)):
            rid = f"resp_bgfill_{n:012d}"
            run_rows.append(
                {
                    "response_id": rid,
                    "tenant": "t-bg" if n % 10 == 0 else f"t{n % 1000}",
                    "status": "completed",
                    "job": None,
                    "owner": None,
                    "lease_until": None,
                    "last_seq": per_run - 1,
                    "created_at": now,
                    "ended_at": now,
                }
            )
            event_rows += [
                {"response_id": rid, "seq": q, "type": "response.output_text.delta", "body": body}
                for q in range(per_run)
            ]
        with store.engine.begin() as conn:
            conn.execute(runs.insert(), run_rows)
            conn.execute(events.insert(), event_rows)


def background(store: Store, name: str, table_rows: int) -> None:
    """Background runs: queue one (the tenant's live runs counted), append batches of 3 events to it under its
    lease, replay it, and the shared progress read of 200 followed runs.
    """
    bg = store.background
    ids = []
    submits, appends = [], []
    for _ in range(200):
        response = bg_events.queued({"model": "m"}, None, None)
        t0 = time.perf_counter()
        bg.submit(
            tenant="t-bg",
            provider="openai",
            response=response,
            input_items=input_items_of("hello"),
            job="{}",
            first_events=bg_events.opening(response),
            limit=1000,
        )
        submits.append((time.perf_counter() - t0) * 1000)
        ids.append(response["id"])
        assert bg.claim(response["id"], "bench", time.time() + 60) is not None
    delta = {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "delta": "word"}
    for seq in range(2, 2 + 3 * 100, 3):
        batch = [{**delta, "sequence_number": seq + i} for i in range(3)]
        t0 = time.perf_counter()
        assert bg.append(ids[0], "bench", batch, time.time() + 60)
        appends.append((time.perf_counter() - t0) * 1000)
    for label, part in (("queue a run (limit counted)", submits), ("append a batch of 3 events", appends)):
        part = sorted(part)
        print(
            f"| {name} | background: {label} | {table_rows:,} | {statistics.median(part):.3f} | "
            f"{part[int(0.99 * len(part)) - 1]:.3f} |",
            flush=True,
        )
    for label, fn, count in (
        ("replay 300 events", lambda: bg.events_after(ids[0], -1, 500), 300),
        ("progress of 200 followed runs", lambda: bg.progress(ids), 300),
        ("expired leases", lambda: bg.expired(time.time()), 300),
    ):
        p50, p99 = timed(fn, count)
        print(f"| {name} | background: {label} | {table_rows:,} | {p50:.3f} | {p99:.3f} |", flush=True)
    with store.engine.begin() as conn:  # the measured runs go, so that a second pass starts alike
        conn.execute(events.delete().where(events.c.response_id.in_(ids)))
        conn.execute(runs.delete().where(runs.c.response_id.in_(ids)))
        conn.execute(items.delete().where(items.c.response_id.in_(ids)))
        conn.execute(responses.delete().where(responses.c.id.in_(ids)))


def timed(fn, count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.99 * len(samples)))]


def run(name: str, url: str, rows: int) -> None:
    store = Store(url)
    store.migrate()
    conversation(store, name, 0)
    background(store, name, 0)
    print(f"{name}: filling {rows} responses, conversation items and background events…", file=sys.stderr)
    fill_conversations(store, rows)
    conversation(store, name, rows)
    fill_events(store, rows)
    background(store, name, rows)
    ids = fill(store, rows)
    last = chain(store, 1000)
    rng = random.Random(1)

    def get() -> None:
        rid = rng.choice(ids)
        assert store.get(f"t{int(rid[5:17]) % 1000}", rid) is not None

    def page() -> None:
        rid = rng.choice(ids)
        assert store.input_items(f"t{int(rid[5:17]) % 1000}", rid, limit=20) is not None

    def walk() -> None:
        assert len(store.chain_items("t-chain", last)) == 2000

    for label, fn, count in (
        ("GET by id", get, 2000),
        ("input_items page", page, 2000),
        ("chain walk, 1,000 turns", walk, 30),
    ):
        p50, p99 = timed(fn, count)
        print(f"| {name} | {label} | {rows:,} | {p50:.3f} | {p99:.3f} |", flush=True)
    store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    print("| backend | operation | stored responses (or conversation items) | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for backend in args.backends.split(","):
        if backend == "sqlite":
            path = Path(f"/tmp/gateway-store-bench-{os.getpid()}.sqlite3")
            try:
                run("sqlite", f"sqlite:///{path}", args.rows)
            finally:
                for suffix in ("", "-wal", "-shm"):
                    Path(str(path) + suffix).unlink(missing_ok=True)
        else:
            schema = f"gw_bench_{uuid.uuid4().hex[:10]}"
            admin = sa.create_engine(args.pg_url)
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            try:
                run("postgresql", f"{args.pg_url}?options=-csearch_path%3D{schema}", args.rows)
            finally:
                with admin.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()


if __name__ == "__main__":
    main()

"""Group commit (gateway/store/group.py): records made in one turn of a gevent worker's loop share a transaction.

Run in a child process that gevent has patched, as a gunicorn gevent worker is; both backends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import json
    import sys
    import time

    import gevent
    import sqlalchemy as sa

    from gateway.errors import UpstreamError
    from gateway.store import Store, input_items_of

    url, case = sys.argv[1], sys.argv[2]
    ops = []
    store = Store(url, observe=lambda op, seconds, error: ops.append((op, error)))
    store.migrate()
    statements = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2].split()[0]))

    def response(rid):
        return {
            "id": rid, "object": "response", "status": "completed", "model": "m", "created_at": time.time(),
            "output": [{"type": "message", "id": "msg_" + rid, "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": "answer " + rid, "annotations": []}]}],
        }

    def record(rid, tenant="t1"):
        try:
            store.record(tenant=tenant, provider="openai", mode="native", response=response(rid),
                         input_items=input_items_of("question " + rid))
            return "ok"
        except UpstreamError as err:
            return err.code

    if case == "burst":
        jobs = [gevent.spawn(record, f"resp_{i}") for i in range(20)]
    elif case == "conflicts":
        record("resp_taken", tenant="t2")  # another tenant's id
        record("resp_mine")  # committed before; its "retry" must count as success
        ops.clear()
        statements.clear()
        names = ["resp_a", "resp_taken", "resp_b", "resp_mine", "resp_c"]
        jobs = [gevent.spawn(record, rid) for rid in names]
    gevent.joinall(jobs)
    ids = [f"resp_{i}" for i in range(20)] + ["resp_a", "resp_b", "resp_c"]
    kept = {rid: store.get("t1", rid) is not None for rid in ids}
    print(json.dumps({
        "results": [job.value for job in jobs],
        "records": sum(1 for op, _ in ops if op == "record"),
        "inserts": statements.count("INSERT"),
        "kept": kept,
        "taken_owner": store.owner_of("resp_taken"),
        "items_a": [i["content"][0]["text"] for i in (store.input_items("t1", "resp_a") or ([], False))[0]],
    }))
    """
)


def _run(store_url: str, case: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, store_url, case], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_records_of_one_loop_turn_share_one_transaction(store_url):
    got = _run(store_url, "burst")
    assert got["results"] == ["ok"] * 20
    assert all(got["kept"][f"resp_{i}"] for i in range(20))
    # 20 greenlets that reach their record in the same turn: one transaction, two INSERTs, not 20 and 40.
    assert got["records"] == 1
    assert got["inserts"] == 2


@pytest.mark.slow
def test_a_batch_that_fails_on_a_constraint_is_written_record_by_record(store_url):
    got = _run(store_url, "conflicts")
    # Each gets what a lone write gives: another tenant's id is refused, a retried commit of one's own
    # row is a success, and the others are kept with their items.
    assert got["results"] == ["ok", "upstream_duplicate_id", "ok", "ok", "ok"]
    assert got["kept"]["resp_a"] and got["kept"]["resp_b"] and got["kept"]["resp_c"]
    assert got["taken_owner"] == "t2"
    assert got["items_a"] == ["question resp_a"]

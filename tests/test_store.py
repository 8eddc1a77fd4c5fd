"""The store on both backends: ownership, paging, chains, deletion, purge, concurrent writers."""

from __future__ import annotations

import multiprocessing
import time

import pytest
import sqlalchemy as sa

from gateway.store import Store, input_items_of


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    s.migrate()
    yield s
    s.dispose()


def _response(rid, prev=None, text="hi", created=None):
    return {
        "id": rid,
        "object": "response",
        "status": "completed",
        "model": "m",
        "previous_response_id": prev,
        "created_at": created or time.time(),
        "output": [
            {
                "type": "message",
                "id": f"msg_out_{rid}",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": f"answer {rid}", "annotations": []}],
            }
        ],
    }


def _turn(store, rid, prev=None, tenant="t1", text=None, created=None):
    store.record(
        tenant=tenant,
        provider="openai",
        mode="native",
        response=_response(rid, prev, created=created),
        input_items=input_items_of(text or f"question {rid}"),
    )


def test_record_and_get_belong_to_the_tenant(store):
    _turn(store, "resp_a")
    got = store.get("t1", "resp_a")
    assert got.provider == "openai" and got.body["output"][0]["id"] == "msg_out_resp_a"
    assert store.get("t2", "resp_a") is None
    assert store.input_items("t2", "resp_a") is None
    assert store.delete("t2", "resp_a") is False
    assert store.get("t1", "resp_a") is not None
    assert store.owner_of("resp_a") == "t1" and store.owner_of("resp_zz") is None


def test_input_items_pages_with_cursor_both_orders(store):
    items = input_items_of([{"role": "user", "content": f"m{i}"} for i in range(7)])
    store.record(tenant="t1", provider="openai", mode="native", response=_response("resp_p"), input_items=items)
    ids = [i["id"] for i in items]
    assert all(i.startswith("msg_") for i in ids) and len(set(ids)) == 7

    page, more = store.input_items("t1", "resp_p", limit=3, order="asc")
    assert [i["id"] for i in page] == ids[:3] and more
    page, more = store.input_items("t1", "resp_p", limit=3, order="asc", after=ids[5])
    assert [i["id"] for i in page] == ids[6:] and not more
    page, more = store.input_items("t1", "resp_p", limit=20)
    assert [i["id"] for i in page] == ids[::-1] and not more
    page, more = store.input_items("t1", "resp_p", limit=2, order="desc", after=ids[4])
    assert [i["id"] for i in page] == [ids[3], ids[2]] and more
    assert store.input_items("t1", "resp_p", after="msg_unknown") == ([], False)


def test_chain_walk_returns_history_oldest_first(store):
    _turn(store, "resp_1")
    _turn(store, "resp_2", "resp_1")
    _turn(store, "resp_3", "resp_2")
    _turn(store, "resp_x", "resp_1", tenant="t2")  # another tenant's branch is never followed
    chain = store.chain_items("t1", "resp_3")
    texts = [i["content"][0]["text"] for i in chain]
    assert texts == [
        "question resp_1",
        "answer resp_1",
        "question resp_2",
        "answer resp_2",
        "question resp_3",
        "answer resp_3",
    ]
    assert "id" not in chain[0] and chain[1]["id"] == "msg_out_resp_1"
    assert store.chain_items("t2", "resp_3") == []


def test_deleting_a_turn_keeps_later_turns_and_cuts_the_chain_there(store):
    _turn(store, "resp_1")
    _turn(store, "resp_2", "resp_1")
    _turn(store, "resp_3", "resp_2")
    assert store.delete("t1", "resp_2")
    assert store.get("t1", "resp_2") is None and store.input_items("t1", "resp_2") is None
    assert store.get("t1", "resp_3").previous_response_id == "resp_2"
    texts = [i["content"][0]["text"] for i in store.chain_items("t1", "resp_3")]
    assert texts == ["question resp_3", "answer resp_3"]


def test_purge_removes_only_old_responses_with_progress(store):
    old = time.time() - 40 * 86400
    for i in range(5):
        _turn(store, f"resp_old{i}", created=old)
    _turn(store, "resp_new")
    seen = []
    assert store.purge(30 * 86400, batch=2, progress=seen.append) == 5
    assert seen == [2, 4, 5]
    assert store.count() == 1 and store.get("t1", "resp_new") is not None
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM gw_items")).scalar() == 2


def test_secret_is_made_once(store, store_url):
    first = store.secret("key_salt")
    other = Store(store_url)
    assert other.secret("key_salt") == first and len(first) == 64
    other.dispose()


def _writer(url, worker, count):
    s = Store(url)
    s.migrate()
    for i in range(count):
        _turn(s, f"resp_w{worker}_{i}", tenant=f"t{worker}")
    s.dispose()


@pytest.mark.slow
def test_concurrent_writers_from_several_processes_lose_nothing(store_url):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(store_url, w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = Store(store_url)
    assert store.count() == 240
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM gw_items")).scalar() == 480
    store.dispose()


def test_chain_query_uses_indexes_not_scans(tmp_path):
    """The chain walk's cost follows the chain, not the table: every step is an index search."""
    store = Store(f"sqlite:///{tmp_path / 'plan.sqlite3'}")
    store.migrate()
    _turn(store, "resp_1")
    captured = []

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def _capture(conn, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    store.chain_items("t1", "resp_1")
    statement, parameters = captured[-1]
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    details = [row[-1] for row in plan]
    scans = [d for d in details if d.startswith("SCAN") and "gw_" in d and "chain" not in d]
    assert not scans, details
    assert any("gw_items" in d and "USING" in d for d in details), details


def test_purge_leaves_a_background_response_that_is_still_queued_or_running(store):
    old = time.time() - 40 * 86400
    response = {**_response("resp_bg", None, created=old), "status": "queued", "background": True}
    store.background.submit(
        tenant="t1", provider="openai", response=response, input_items=[], job="{}", first_events=[], limit=0
    )
    _turn(store, "resp_old", created=old)
    assert store.purge(30 * 86400) == 1  # the finished one only: the queued run's consumer still needs it
    assert store.get("t1", "resp_bg") is not None and store.get("t1", "resp_old") is None


def test_a_full_disk_is_not_retried_and_one_write_through_its_whole_window_opens_the_breaker(tmp_path):
    # issue 21 item 11: with the disk full, every write waited out its 5 s of retries and the store was never
    # known to be down, so every request waited too. SQLite's max_page_count gives SQLITE_FULL at will.
    from gateway.errors import StoreUnavailable
    from gateway.store.engine import Database

    db = Database(f"sqlite:///{tmp_path / 'full.sqlite3'}", write_timeout=5.0)
    db.write("setup", lambda: _execute(db, "CREATE TABLE blobs (b BLOB)"))
    pages = _execute(db, "PRAGMA page_count").scalar()
    sa.event.listen(db.engine, "connect", lambda conn, _: conn.execute(f"PRAGMA max_page_count = {pages}"))
    db.engine.dispose()  # new connections, each held to the file's size now
    attempts = []

    def grow():
        attempts.append(1)
        _execute(db, "INSERT INTO blobs VALUES (randomblob(100000))")

    for n in range(3):
        with pytest.raises(StoreUnavailable):
            db.write("grow", grow)
        assert len(attempts) == n + 1  # no retries: they cannot free the disk
    assert db.known_down()  # three in a row: further creates are refused before a provider is paid

    # A write that fails through its whole retry window is outage enough on its own.
    flaky = Database(f"sqlite:///{tmp_path / 'flaky.sqlite3'}", write_timeout=2.0)

    def locked():
        raise sa.exc.OperationalError("INSERT", {}, Exception("database is locked"))

    with pytest.raises(StoreUnavailable):
        flaky.write("locked", locked)
    assert flaky.known_down()


def _execute(db, sql: str):
    with db.engine.begin() as conn:
        return conn.exec_driver_sql(sql)

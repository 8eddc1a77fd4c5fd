"""Concurrent turns on one conversation from two gateway instances sharing one PostgreSQL: every item is
kept, each turn's items together (its input, then its output), in the order the turns completed.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import KEY, Gunicorn

HEADERS = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "fakechat"}
TURNS = 24


def _text(item: dict) -> str:
    return "".join(p.get("text", "") for p in item["content"])


@pytest.mark.slow
def test_concurrent_turns_from_two_instances_keep_every_item_in_order(fake, pg_schema):
    import sqlalchemy as sa

    from gateway.store.tables import metadata

    engine = sa.create_engine(pg_schema)
    metadata.drop_all(engine)  # a schema of our own, emptied: the instances migrate it as they start
    engine.dispose()
    env = {
        "GATEWAY_PROVIDERS__FAKECHAT__BASE_URL": fake.url,
        "GATEWAY_PROVIDERS__FAKECHAT__API": "chat",
        "GATEWAY_STORE_URL": pg_schema,
        "GATEWAY_KEY_SALT": "test-salt",
    }
    instances = [Gunicorn(env, workers=2, threads=8), Gunicorn(env, workers=2, threads=8)]
    try:
        conv = requests.post(f"{instances[0].url}/v1/conversations", json={}, headers=HEADERS, timeout=10).json()["id"]

        def turn(n: int) -> tuple[int, dict]:
            url = instances[n % 2].url + "/v1/responses"
            # Uneven provider delays make the turns finish in another order than they started.
            body = {
                "model": "m",
                "input": f"turn {n}",
                "conversation": conv,
                "fake": {"delay_ms": random.randint(0, 80)},
            }
            if n % 3 == 0:
                body["stream"] = True
                resp = requests.post(url, json=body, headers=HEADERS, timeout=30)
                assert resp.status_code == 200 and "response.completed" in resp.text, resp.text
                return n, {}
            resp = requests.post(url, json=body, headers=HEADERS, timeout=30)
            assert resp.status_code == 200, resp.text
            return n, resp.json()

        with ThreadPoolExecutor(max_workers=12) as pool:
            done = list(pool.map(turn, range(TURNS)))

        items, after = [], None
        while True:  # paged through the other instance, as a client would
            params = {"order": "asc", "limit": 7, **({"after": after} if after else {})}
            page = requests.get(
                f"{instances[1].url}/v1/conversations/{conv}/items", params=params, headers=HEADERS, timeout=10
            ).json()
            items += page["data"]
            if not page["has_more"]:
                break
            after = page["last_id"]
    finally:
        for instance in instances:
            instance.stop()

    assert len(items) == 2 * TURNS
    assert len({i["id"] for i in items}) == 2 * TURNS
    pairs = [(items[i], items[i + 1]) for i in range(0, len(items), 2)]
    order = []
    for question, answer in pairs:  # never interleaved: each input is followed by its own answer
        assert question["role"] == "user" and answer["role"] == "assistant"
        asked = _text(question)
        assert _text(answer).endswith(": " + asked)
        order.append(int(asked.split()[1]))
    assert sorted(order) == list(range(TURNS))
    # Each answer saw the conversation as it was when its turn started: never more than was before it.
    for position, (_, answer) in enumerate(pairs):
        seen = int(_text(answer).split()[1].rstrip(":"))  # "Echo <user messages seen>: ..."
        assert 1 <= seen <= position + 1
    for _, response in done:
        if response:
            assert response["conversation"] == {"id": conv}

"""What each call costs, the usage table, and the usage report (README: "Spend and usage").

Costs are checked against figures worked out by hand from the published prices: genai-prices' bundled data for
openai's gpt-4o-mini ($0.15 input, $0.075 cached input, $0.60 output per million tokens) and anthropic's
claude-sonnet-4-5 ($3 input, $0.30 cache read, $3.75 cache write, $15 output below 200k tokens), and the
settings' prices for the rest.
"""

from __future__ import annotations

import json
import logging
import time
from decimal import Decimal

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner
from flask.cli import ScriptInfo

from gateway import create_app
from gateway.auth import key_digest
from gateway.config import Settings, SettingsError
from gateway.providers import Catalogue
from gateway.spend import FREE, Prices, Tokens, cost_of, plain, tokens_of
from gateway.startup import StartupError, check
from gateway.store import Store
from gateway.store.tables import responses, usage
from gateway.store.usage import period_start
from tests.conftest import KEY, Gunicorn, close_app

GW_KEY = "gw-team-a-secret"
ADMIN = "admin-secret"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}

# 1,000 input tokens of which 400 cached, 200 output tokens of which 50 reasoning. At gpt-4o-mini's prices:
# 600 x 0.15 + 400 x 0.075 + 200 x 0.60 = 90 + 30 + 120 = 240 millionths of a dollar.
USAGE = {
    "input_tokens": 1000,
    "input_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 0},
    "output_tokens": 200,
    "output_tokens_details": {"reasoning_tokens": 50},
    "total_tokens": 1200,
}
MINI_COST = Decimal("0.00024")
# The settings' price of fakechat/chat-model, and a chat usage of 2,000 prompt tokens (500 cached, 100
# written to the cache) and 300 completion tokens (100 reasoning): 1,400 x 2 + 500 x 0.5 + 100 x 2.5 +
# 200 x 8 + 100 x 10 = 2,800 + 250 + 250 + 1,600 + 1,000 = 5,900 millionths of a dollar.
CHAT_PRICE = {"input": 2, "cached_input": 0.5, "cache_write": 2.5, "output": 8, "reasoning": 10}
CHAT_USAGE = {
    "prompt_tokens": 2000,
    "completion_tokens": 300,
    "total_tokens": 2300,
    "prompt_tokens_details": {"cached_tokens": 500, "cache_write_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 100},
}
CHAT_COST = Decimal("0.0059")


def _provider(name: str):
    return Catalogue().get(name)


def _settings(fake, store_url: str, **more) -> dict:
    credentials = {"openai": {"api_key": "sk-team-a"}, "fakechat": {"api_key": "sk-team-a"}}
    return {
        "providers": {"openai": {"base_url": fake.url}, "fakechat": {"base_url": fake.url, "api": "chat"}},
        "store_url": store_url,
        "key_salt": "test-salt",
        "keys": {"team-a": {"digest": key_digest(GW_KEY), "providers": credentials}},
        "admin_key": key_digest(ADMIN),
        "prices": {"fakechat/chat-model": CHAT_PRICE},
        **more,
    }


def _rows(app) -> list[dict]:
    """The usage table, every pending row written first."""
    store = app.extensions["gateway"].store
    store.usage.flush()
    with store.engine.connect() as conn:
        return [row._asdict() for row in conn.execute(sa.select(usage).order_by(usage.c.id))]


def _tokens(row: dict) -> tuple:
    names = ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
    return tuple(row[name] for name in names)


def _completed_id(body: bytes) -> str:
    for line in body.decode().splitlines():
        if line.startswith("data: ") and '"response' in line:
            event = json.loads(line[6:])
            if event["type"] in ("response.completed", "response.failed"):
                return event["response"]["id"]
    raise AssertionError("no terminal event")


# ---------------------------------------------------------------------------------------------- the cost


def test_a_known_openai_model_is_priced_from_genai_prices_cached_and_reasoning_tokens_included():
    prices = Prices({})
    price = prices.price(_provider("openai"), "gpt-4o-mini")
    assert price.source == "genai-prices"
    assert (price.input, price.cached_input, price.output) == (Decimal("0.15"), Decimal("0.075"), Decimal("0.6"))
    assert price.reasoning == price.output  # genai-prices has no price of its own for reasoning
    assert cost_of(price, tokens_of(USAGE)) == MINI_COST
    # The same figure as the library's own calculation, whose input_tokens include cache reads too.
    from genai_prices import Usage, calc_price

    theirs = calc_price(
        Usage(input_tokens=1000, cache_read_tokens=400, output_tokens=200), "gpt-4o-mini", provider_id="openai"
    )
    assert theirs.total_price == MINI_COST
    # A dated model name the provider answers with is the same model; azure-openai is priced as openai.
    assert prices.price(_provider("openai"), "gpt-4o-mini-2024-07-18") == price
    assert prices.price(_provider("azure-openai"), "gpt-4o-mini") == price


def test_cache_writes_have_their_own_price_and_tiers_follow_the_input():
    price = Prices({}).price(_provider("anthropic"), "claude-sonnet-4-5")
    tokens = Tokens(input=10_000, cached=2_000, cache_write=3_000, output=1_000, reasoning=400)
    # 5,000 x 3 + 2,000 x 0.30 + 3,000 x 3.75 + 1,000 x 15 = 15,000 + 600 + 11,250 + 15,000 = 41,850 millionths.
    assert cost_of(price, tokens) == Decimal("0.04185")
    # Past 200k input tokens every token is at the tier's price: 300,000 x 6 + 1,000 x 22.5 millionths.
    assert cost_of(price, Tokens(input=300_000, output=1_000)) == Decimal("1.8225")


def test_the_settings_prices_win_each_part_at_its_own_rate():
    prices = Prices(
        {
            "fakechat/chat-model": CHAT_PRICE,
            "openai/gpt-4o-mini": {"input": 1, "output": 4},  # cached at input's, reasoning at output's
            "mock/priced-*": {"input": 1, "output": 2},
            "mock/priced-big-*": {"input": 10, "output": 20},
        }
    )
    fakechat = Catalogue({"fakechat": {"base_url": "http://127.0.0.1:9/v1", "api": "chat"}}).get("fakechat")
    price = prices.price(fakechat, "chat-model")
    tokens = Tokens(input=2000, cached=500, cache_write=100, output=300, reasoning=100)
    assert price.source == "settings" and cost_of(price, tokens) == CHAT_COST
    own = prices.price(_provider("openai"), "gpt-4o-mini")
    # 1,000 x 1 (cached at input's price) + 200 x 4 (reasoning at output's) = 1,800 millionths.
    assert cost_of(own, tokens_of(USAGE)) == Decimal("0.0018")
    # The longest glob that matches wins; a local provider is free unless priced.
    assert prices.price(_provider("mock"), "priced-big-1").input == Decimal(10)
    assert prices.price(_provider("mock"), "priced-1").input == Decimal(1)
    assert prices.price(_provider("mock"), "mock-1") is FREE
    assert prices.price(_provider("ollama"), "llama3") is FREE


def test_an_unknown_model_has_no_price_and_zero_tokens_cost_nothing():
    prices = Prices({})
    assert prices.price(_provider("openai"), "no-such-model-xyz") is None
    assert tokens_of(None) == Tokens() and tokens_of({"input_tokens": "many", "output_tokens": -3}) == Tokens()
    assert cost_of(FREE, tokens_of(USAGE)) == 0
    assert plain(Decimal("0.000240000000")) == "0.00024" and plain(Decimal("0E-12")) == "0"
    assert plain(Decimal("12.50")) == "12.5" and plain(Decimal(3)) == "3"


@pytest.mark.parametrize(
    ("prices", "message"),
    [
        ({"gpt-4o": {"input": 1, "output": 1}}, 'name each entry "PROVIDER/MODEL"'),
        ({"openai/x": {"input": 1}}, "give output"),
        ({"openai/x": {"input": 1, "output": "cheap"}}, "output must be a number"),
        ({"openai/x": {"input": -1, "output": 1}}, "input must be a number"),
        ({"openai/x": {"input": 1, "output": 1, "cached": 1}}, "unknown key 'cached' (did you mean 'cached_input'?)"),
        ({"openai/x": 3}, "must be a table"),
    ],
)
def test_prices_with_a_mistake_stop_the_start(prices, message):
    with pytest.raises(SettingsError, match="prices") as err:
        Settings.load({"prices": prices}, environ={})
    assert message in str(err.value)


def test_a_price_for_an_unknown_provider_is_named_at_start_up():
    environ = {"GATEWAY_PRICES": json.dumps({"opneai/gpt-4o": {"input": 1, "output": 2}})}
    with pytest.raises(StartupError) as err:
        check(environ, store=False)
    assert "GATEWAY_PRICES: 'opneai/gpt-4o': unknown provider 'opneai' (did you mean 'openai'?)" in err.value.lines[0]


# ---------------------------------------------------------------------------------------------- the usage table


def test_every_charged_call_of_a_mixed_run_is_a_usage_row_and_the_report_adds_them_up(fake, store_url):
    fake.knobs.update(usage=USAGE, chat_usage=CHAT_USAGE)
    app = create_app(_settings(fake, store_url))
    try:
        client = app.test_client()
        key = {"Authorization": f"Bearer {KEY}"}
        openai_h, chat_h = {**key, "x-portkey-provider": "openai"}, {**key, "x-portkey-provider": "fakechat"}

        def post(path, body, headers, trace):
            reply = client.post(path, json=body, headers={**headers, "x-portkey-trace-id": trace})
            reply.get_data()  # a stream is read to its end, as a client does
            return reply

        team = {"Authorization": f"Bearer {GW_KEY}", "x-portkey-provider": "openai"}
        plain_json = post("/v1/responses", {"model": "gpt-4o-mini", "input": "hi"}, team, "t-json")
        streamed = post("/v1/responses", {"model": "chat-model", "input": "hi", "stream": True}, chat_h, "t-stream")
        unkept = post("/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "store": False}, openai_h, "t-unkept")
        fake.knobs["fail_stream"] = True
        failed = post("/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "stream": True}, openai_h, "t-failed")
        fake.knobs.pop("fail_stream")
        count = post("/v1/responses/input_tokens", {"model": "gpt-4o-mini", "input": "hi"}, openai_h, "t-count")
        compact = post("/v1/responses/compact", {"model": "chat-model", "input": "sum it up"}, chat_h, "t-compact")
        unpriced = post("/v1/responses", {"model": "gpt-unknown-9", "input": "hi"}, openai_h, "t-unpriced")

        for reply in (plain_json, streamed, unkept, failed, count, compact, unpriced):
            assert reply.status_code == 200, reply.data
        assert plain_json.headers["x-gateway-cost-usd"] == unkept.headers["x-gateway-cost-usd"] == "0.00024"
        assert count.headers["x-gateway-cost-usd"] == "0" and compact.headers["x-gateway-cost-usd"] == "0.0059"
        assert "x-gateway-cost-usd" not in unpriced.headers and "x-gateway-cost-usd" not in streamed.headers
        assert b"response.failed" in failed.data

        rows = _rows(app)
        by_trace = {row["trace_id"]: row for row in rows}
        assert len(rows) == 7 and len(by_trace) == 7
        tenant = by_trace["t-stream"]["who"]
        assert tenant.startswith("pk:") and KEY not in json.dumps([r["who"] for r in rows])
        expected = {
            "t-json": ("response", "team-a", "openai", "gpt-4o-mini", "completed", (1000, 400, 0, 200, 50)),
            "t-stream": ("response", tenant, "fakechat", "chat-model", "completed", (2000, 500, 100, 300, 100)),
            "t-unkept": ("response", tenant, "openai", "gpt-4o-mini", "completed", (1000, 400, 0, 200, 50)),
            "t-failed": ("response", tenant, "openai", "gpt-4o-mini", "failed", (1000, 400, 0, 200, 50)),
            "t-count": ("input_tokens", tenant, "openai", "gpt-4o-mini", "completed", (0, 0, 0, 0, 0)),
            "t-compact": ("compaction", tenant, "fakechat", "chat-model", "completed", (2000, 500, 100, 300, 100)),
            "t-unpriced": ("response", tenant, "openai", "gpt-unknown-9", "completed", (1000, 400, 0, 200, 50)),
        }
        for trace, (kind, who, provider, model, status, tokens) in expected.items():
            row = by_trace[trace]
            assert (row["kind"], row["who"], row["provider"], row["model"], row["status"]) == (
                kind,
                who,
                provider,
                model,
                status,
            ), trace
            assert _tokens(row) == tokens, trace
        costs = {trace: by_trace[trace]["cost_usd"] for trace in expected}
        assert costs == {
            "t-json": MINI_COST,
            "t-stream": CHAT_COST,
            "t-unkept": MINI_COST,
            "t-failed": MINI_COST,
            "t-count": 0,
            "t-compact": CHAT_COST,
            "t-unpriced": None,
        }
        assert by_trace["t-json"]["response_id"] == plain_json.json["id"]
        assert by_trace["t-stream"]["response_id"] == _completed_id(streamed.data)
        assert by_trace["t-failed"]["response_id"] == _completed_id(failed.data)
        assert by_trace["t-compact"]["response_id"] == compact.json["id"] and by_trace["t-count"]["response_id"] is None
        today = time.strftime("%Y-%m-%d", time.gmtime())
        assert {row["day"] for row in rows} == {today}

        # The cost is kept with each stored response (a store: false one has no record to keep it with).
        store = app.extensions["gateway"].store
        with store.engine.connect() as conn:
            kept = dict(conn.execute(sa.select(responses.c.id, responses.c.cost_usd)).all())
        assert kept[plain_json.json["id"]] == MINI_COST and kept[_completed_id(streamed.data)] == CHAT_COST
        assert kept[_completed_id(failed.data)] == MINI_COST and kept[unpriced.json["id"]] is None
        assert unkept.json["id"] not in kept

        # The report: by key, every call of each; the unpriced one counted apart, its cost left out.
        report = client.get("/v1/gateway/usage?group_by=key", headers=ADMIN_HEADERS)
        assert report.status_code == 200, report.data
        made = report.json
        assert made["object"] == "gateway.usage" and made["group_by"] == ["key"]
        assert [row["key"] for row in made["data"]] == sorted(["team-a", tenant])
        team_row = next(row for row in made["data"] if row["key"] == "team-a")
        assert (team_row["requests"], team_row["input_tokens"], team_row["output_tokens"]) == (1, 1000, 200)
        assert team_row["cost_usd"] == pytest.approx(0.00024, abs=1e-12) and team_row["unpriced"] == 0
        other = next(row for row in made["data"] if row["key"] == tenant)
        assert other["requests"] == 6 and other["unpriced"] == 1
        assert other["cost_usd"] == pytest.approx(float(CHAT_COST * 2 + MINI_COST * 2), abs=1e-12)
        total = made["total"]
        assert total["requests"] == 7 and total["input_tokens"] == 8000 and total["cached_tokens"] == 2600
        assert total["cache_write_tokens"] == 200 and total["output_tokens"] == 1400
        assert total["reasoning_tokens"] == 400 and total["unpriced"] == 1
        assert total["cost_usd"] == pytest.approx(float(CHAT_COST * 2 + MINI_COST * 3), abs=1e-12)
        assert b'"cost_usd":0.0' in report.data  # a JSON number, not a string

        # All four groups by default; the day is the UTC date; a window with nothing in it.
        full = client.get("/v1/gateway/usage", headers=ADMIN_HEADERS).json
        assert full["group_by"] == ["key", "provider", "model", "day"] and len(full["data"]) == 4
        assert {row["day"] for row in full["data"]} == {today}
        chat_row = next(r for r in full["data"] if r["provider"] == "fakechat")
        assert chat_row["requests"] == 2 and chat_row["cost_usd"] == pytest.approx(0.0118, abs=1e-12)
        empty = client.get("/v1/gateway/usage?since=2000-01-01&until=2000-01-02", headers=ADMIN_HEADERS).json
        assert empty["data"] == [] and empty["total"]["requests"] == 0 and empty["total"]["cost_usd"] is None
        assert empty["since"] == "2000-01-01T00:00:00Z"
    finally:
        close_app(app)


def test_what_a_key_spent_since_the_start_of_its_utc_day_or_month(store_url):
    store = Store(store_url)
    now = time.time()
    day, month = period_start("day", now), period_start("month", now)
    assert time.gmtime(day)[3:6] == (0, 0, 0) and time.gmtime(month)[2:6] == (1, 0, 0, 0)
    assert day <= now < day + 86400 and month <= day

    def row(who: str, at: float, cost: Decimal | None) -> dict:
        zero = dict.fromkeys(("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens"), 0)
        return {
            **zero,
            "reasoning_tokens": 0,
            "at": at,
            "day": time.strftime("%Y-%m-%d", time.gmtime(at)),
            "who": who,
            "provider": "openai",
            "model": "gpt-4o-mini",
            "kind": "response",
            "response_id": None,
            "trace_id": None,
            "status": "completed",
            "cost_usd": cost,
        }

    try:
        for entry in [
            row("team-a", now - 1, Decimal("0.25")),
            row("team-a", day + 1, Decimal("0.000001")),
            row("team-a", day - 10, Decimal("1.5")),  # yesterday (or earlier): this month at most
            row("team-a", month - 10, Decimal("100")),  # last month
            row("team-a", now - 2, None),  # no known price: adds nothing
            row("pk:0123456789abcdef0123456789abcdef", now - 1, Decimal("7")),
        ]:
            store.usage.add(entry)
        store.usage.flush()
        assert store.usage.spent("team-a", day) == Decimal("0.250001")
        assert store.usage.spent("team-a", month) == Decimal("0.250001") + (Decimal("1.5") if day - 10 >= month else 0)
        assert store.usage.spent("team-a", 0) == Decimal("101.750001")
        assert store.usage.spent("team-a", month - 100, until=month) == Decimal("100")
        assert store.usage.spent("pk:0123456789abcdef0123456789abcdef", day) == 7
        assert store.usage.spent("team-b", 0) == 0
        with pytest.raises(ValueError, match="not a period"):
            period_start("week")
    finally:
        store.dispose()


def test_the_budget_query_is_one_range_of_its_index(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 's.sqlite3'}")
    try:
        store.prepare()
        query = sa.select(sa.func.sum(usage.c.cost_usd)).where(usage.c.who == "team-a", usage.c.at >= 0)
        sql = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
        with store.engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert "COVERING INDEX gw_usage_who_at" in plan, plan
    finally:
        store.dispose()


def test_a_response_made_of_several_model_calls_is_charged_once(scripted, tmp_path):
    from tests.test_mcp import McpServer

    server = McpServer()
    app = create_app(
        {
            "providers": {"scriptchat": {"base_url": scripted.url, "api": "chat"}},
            "store_url": f"sqlite:///{tmp_path / 's.sqlite3'}",
            "key_salt": "test-salt",
            "mcp_hosts": ["127.0.0.1"],
            "prices": {"scriptchat/scripted-1": {"input": 1, "output": 2}},
        }
    )
    try:
        tool = {"type": "mcp", "server_label": "tests", "server_url": server.url, "require_approval": "never"}
        reply = app.test_client().post(
            "/v1/responses",
            json={"model": "scripted-1", "input": "add them", "tools": [{**tool, "allowed_tools": ["add"]}]},
            headers={"Authorization": f"Bearer {KEY}", "x-portkey-provider": "scriptchat"},
        )
        assert reply.status_code == 200, reply.data
        assert [item["type"] for item in reply.json["output"]] == ["mcp_list_tools", "mcp_call", "message"]
        used = reply.json["usage"]
        assert used["total_tokens"] == 60  # two model calls, summed
        rows = _rows(app)
        assert len(rows) == 1 and rows[0]["response_id"] == reply.json["id"]
        assert (rows[0]["input_tokens"], rows[0]["output_tokens"]) == (used["input_tokens"], used["output_tokens"])
        expected = (Decimal(used["input_tokens"]) + 2 * Decimal(used["output_tokens"])) / 1_000_000
        assert rows[0]["cost_usd"] == expected and reply.headers["x-gateway-cost-usd"] == plain(expected)
    finally:
        close_app(app)
        server.stop()


def test_a_store_that_cannot_take_usage_rows_fails_no_request(fake, caplog):
    # Nothing listens on port 1: every store call is refused at once. store: false needs no store.
    app = create_app(_settings(fake, "postgresql://gw@127.0.0.1:1/gw", store_write_timeout=0.2))
    fake.knobs["usage"] = USAGE
    svc = app.extensions["gateway"]
    svc.store.usage.max_pending = 3
    headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
    body = {"model": "gpt-4o-mini", "input": "hi", "store": False}
    try:
        caplog.set_level(logging.INFO, logger="gateway")
        for _ in range(2):
            reply = app.test_client().post("/v1/responses", json=body, headers=headers)
            assert reply.status_code == 200 and reply.headers["x-gateway-cost-usd"] == "0.00024"
        svc.store.usage.flush()  # refused: the rows wait for the store
        assert len(svc.store.usage._pending) == 2
        for _ in range(3):  # the third and fourth find no room: lost, and counted
            assert app.test_client().post("/v1/responses", json=body, headers=headers).status_code == 200
        svc.store.usage.flush()
        assert len(svc.store.usage._pending) == 3
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "usage rows" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        metrics = app.test_client().get("/metrics").data.decode()
        assert "gateway_usage_rows_lost_total 2.0" in metrics
    finally:
        # One attempt at the rows left, not the store's whole retry window; those it cannot write are lost.
        started = time.monotonic()
        close_app(app)
        assert time.monotonic() - started < 2
    assert not svc.store.usage._pending  # lost, and counted: the writer stops with the store


def test_usage_rows_are_purged_at_their_own_age_not_the_responses(fake, tmp_path):
    app = create_app(_settings(fake, f"sqlite:///{tmp_path / 's.sqlite3'}"))
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {KEY}", "x-portkey-provider": "openai"}
        client.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "hi"}, headers=headers)
        store = app.extensions["gateway"].store
        recent = _rows(app)[0]
        old = {k: v for k, v in recent.items() if k != "id"}
        store.usage.add({**old, "at": time.time() - 401 * 86400, "day": "2000-01-01"})
        assert len(_rows(app)) == 2
        result = CliRunner().invoke(_cli(), ["purge", "--older-than", "0s"], obj=ScriptInfo(create_app=lambda: app))
        assert result.exit_code == 0, result.output
        assert "purged 1 responses older than 0s" in result.output
        assert "purged 1 usage rows older than 400d" in result.output
        assert [row["id"] for row in _rows(app)] == [recent["id"]]  # the recent row outlives its response
    finally:
        close_app(app)


def _cli():
    from gateway.cli import main

    return main


def test_the_report_needs_the_admin_key_and_says_what_is_wrong(fake, tmp_path):
    app = create_app(_settings(fake, f"sqlite:///{tmp_path / 's.sqlite3'}"))
    closed = create_app({**_settings(fake, f"sqlite:///{tmp_path / 't.sqlite3'}"), "admin_key": ""})
    try:
        client = app.test_client()
        assert client.get("/v1/gateway/usage").status_code == 401
        assert client.get("/v1/gateway/usage", headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
        assert closed.test_client().get("/v1/gateway/usage", headers=ADMIN_HEADERS).status_code == 404
        for query, param, words in [
            ("group_by=team", "group_by", "Unknown group 'team'"),
            ("group_by=modle", "group_by", "(did you mean 'model'?)"),
            ("since=last-week", "since", "since must be an age (7d, 12h), a date"),
            ("since=1d&until=2d", "until", "until is before since"),
            ("sinse=7d", "sinse", ""),
        ]:
            reply = client.get(f"/v1/gateway/usage?{query}", headers=ADMIN_HEADERS)
            assert reply.status_code == 400, query
            assert reply.json["error"]["param"] == param and words in reply.json["error"]["message"]
        ok = client.get("/v1/gateway/usage?since=2h&until=2099-01-01T00:00:00%2B02:00", headers=ADMIN_HEADERS)
        assert ok.status_code == 200 and ok.json["until"] == "2098-12-31T22:00:00Z"
    finally:
        close_app(app)
        close_app(closed)


def test_gateway_usage_prints_the_report_as_a_table(fake, tmp_path):
    fake.knobs.update(usage=USAGE, chat_usage=CHAT_USAGE)
    app = create_app(_settings(fake, f"sqlite:///{tmp_path / 's.sqlite3'}"))
    try:
        client = app.test_client()
        team = {"Authorization": f"Bearer {GW_KEY}"}
        for provider, model in [("openai", "gpt-4o-mini"), ("openai", "gpt-4o-mini"), ("fakechat", "chat-model")]:
            reply = client.post(
                "/v1/responses", json={"model": model, "input": "hi"}, headers={**team, "x-portkey-provider": provider}
            )
            assert reply.status_code == 200, reply.data
        app.extensions["gateway"].store.usage.flush()
        info = ScriptInfo(create_app=lambda: app)
        result = CliRunner().invoke(_cli(), ["usage", "--since", "7d", "--group-by", "key,model"], obj=info)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].startswith("usage from ") and "USD" in lines[0]
        assert lines[1].split() == ["key", "model", "requests", "input_tokens", "output_tokens", "cost_usd", "unpriced"]
        assert lines[2].split() == ["team-a", "chat-model", "1", "2000", "300", "0.0059", "0"]
        assert lines[3].split() == ["team-a", "gpt-4o-mini", "2", "2000", "400", "0.00048", "0"]
        assert lines[4].split() == ["total", "3", "4000", "700", "0.00638", "0"]
        as_json = CliRunner().invoke(_cli(), ["usage", "--json", "--group-by", "provider"], obj=info)
        made = json.loads(as_json.output)
        assert [(r["provider"], r["requests"]) for r in made["data"]] == [("fakechat", 1), ("openai", 2)]
        assert made["total"]["cost_usd"] == pytest.approx(0.00638, abs=1e-12)
        bad = CliRunner().invoke(_cli(), ["usage", "--group-by", "team"], obj=info)
        assert bad.exit_code != 0 and "Unknown group 'team'" in bad.output
    finally:
        close_app(app)


def test_a_store_made_before_the_cost_column_gets_it_and_older_writers_still_work(store_url):
    store = Store(store_url)
    store.prepare()
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE gw_responses DROP COLUMN cost_usd"))
    store.dispose()
    upgraded = Store(store_url)
    try:
        upgraded.prepare()
        assert "cost_usd" in {c["name"] for c in sa.inspect(upgraded.engine).get_columns("gw_responses")}
        response = {"id": "resp_cost", "status": "completed", "output": [], "model": "m"}
        upgraded.record(tenant="t", provider="openai", mode="native", response=response, input_items=[], cost=MINI_COST)
        with upgraded.engine.begin() as conn:
            # A gateway of the version before names no cost: its rows have none.
            conn.execute(
                sa.text(
                    "INSERT INTO gw_responses (id, tenant, provider, mode, created_at, body) "
                    "VALUES ('resp_old', 't', 'openai', 'native', 0, '{}')"
                )
            )
            kept = dict(conn.execute(sa.select(responses.c.id, responses.c.cost_usd)).all())
        assert kept == {"resp_cost": MINI_COST, "resp_old": None}
        assert upgraded.ready() == (True, "ok")
    finally:
        upgraded.dispose()


# ---------------------------------------------------------------------------------------------- under gunicorn


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels (in any order) in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
def test_cost_in_the_header_the_log_the_metrics_and_background_runs_with_the_openai_sdk(
    gateway_env, fake, make_sdk, tmp_path
):
    fake.knobs["usage"] = USAGE
    env = {
        **gateway_env,
        "GATEWAY_STORE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "GATEWAY_KEYS__TEAM_A__DIGEST": key_digest(GW_KEY),
        "GATEWAY_KEYS__TEAM_A__PROVIDERS__OPENAI__API_KEY": "sk-team-a",
        "GATEWAY_ADMIN_KEY": key_digest(ADMIN),
        "GATEWAY_BACKGROUND_CONSUMERS": "1",
    }
    server = Gunicorn(env, workers=2, threads=8)
    try:
        sdk = make_sdk(server.url + "/v1", api_key=GW_KEY)
        raw = sdk.responses.with_raw_response.create(
            model="gpt-4o-mini", input="what does it cost?", extra_headers={"x-portkey-trace-id": "trace-spend-1"}
        )
        assert raw.headers["x-gateway-cost-usd"] == "0.00024"
        first = raw.parse()
        assert first.usage.input_tokens_details.cached_tokens == 400
        streamed = list(sdk.responses.create(model="gpt-4o-mini", input="and streamed?", stream=True))
        assert streamed[-1].type == "response.completed"
        queued = sdk.responses.create(model="gpt-4o-mini", input="later", background=True)
        deadline = time.monotonic() + 30
        while (done := sdk.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
            assert time.monotonic() < deadline, "the background run did not end"
            time.sleep(0.2)
        assert done.status == "completed"

        # The access log line.
        deadline = time.monotonic() + 5
        while not (lines := [json.loads(line) for line in server.output().splitlines() if "trace-spend-1" in line]):
            assert time.monotonic() < deadline, "no access log line"
            time.sleep(0.05)
        assert lines[0]["cost_usd"] == 0.00024 and lines[0]["tenant"] == "key:team-a"

        # The usage table, through the report: the three responses, the background one by its own id.
        deadline = time.monotonic() + 10
        while True:
            report = requests.get(
                server.url + "/v1/gateway/usage?group_by=key,model", headers=ADMIN_HEADERS, timeout=10
            ).json()
            if report["total"]["requests"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert [(r["key"], r["model"], r["requests"]) for r in report["data"]] == [("team-a", "gpt-4o-mini", 3)]
        assert report["data"][0]["cost_usd"] == pytest.approx(0.00072, abs=1e-12)

        metrics = requests.get(server.url + "/metrics", timeout=10).text
        # The two answered by the HTTP workers (a background consumer counts in its own process).
        assert _metric(metrics, "gateway_cost_usd_total", provider="openai", model="gpt-4o-mini") >= 0.00048
        assert _metric(metrics, "gateway_key_cost_usd_total", key="team-a") >= 0.00048
    finally:
        server.stop()


def test_a_budget_spent_by_a_stream_refuses_the_next_request(fake, tmp_path):
    # The limits read what a key spent from the usage table: a stream that crosses the budget ends, the next
    # request is refused (each worker reads a key's spend at most once a second).
    fake.knobs["usage"] = USAGE
    settings = _settings(fake, f"sqlite:///{tmp_path / 's.sqlite3'}")
    settings["keys"]["team-a"]["limits"] = {"usd_per_day": 0.0003}
    app = create_app(settings)
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {GW_KEY}", "x-portkey-provider": "openai"}
        for stream in (False, True):
            reply = client.post(
                "/v1/responses", json={"model": "gpt-4o-mini", "input": "hi", "stream": stream}, headers=headers
            )
            assert reply.status_code == 200 and b"response.failed" not in reply.get_data()
            app.extensions["gateway"].store.usage.flush()
            time.sleep(1.05)
        assert app.extensions["gateway"].store.usage.spent("team-a", period_start("day")) == 2 * MINI_COST
        refused = client.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "hi"}, headers=headers)
        assert refused.status_code == 429 and refused.json["error"]["code"] == "insufficient_quota"
    finally:
        close_app(app)

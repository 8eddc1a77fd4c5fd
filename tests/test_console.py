"""The operator's console in a real headless Chromium (Debian's ``chromium``, driven by Playwright; tests/run
installs it, and Playwright's own browser builds are never downloaded), against the gateway under gunicorn
with its background consumer, before the fake provider; and its refusals, through the browser and plainly.

``AIGW_SCREENSHOTS=docs`` writes the README's screenshots (docs/console-*.png); else they go to a temporary
directory, so that every run makes them and a page that cannot render fails here.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from gateway import create_app
from gateway.auth import key_digest
from tests.conftest import ROOT, Gunicorn, close_app

ADMIN = "console-admin-key-0123456789"
TEAM_A, TEAM_B = "sk-gw-team-a-console", "sk-gw-team-b-console"
# USD per million tokens: figures that make each call's cost easy to check by hand.
PRICE = {"input": 2.0, "output": 8.0}
LONG = " ".join(f"word{i}" for i in range(200))  # the fake streams its input back, a word a delta
WAIT = 15_000  # ms a page is given to show what a test waits for


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("Debian's chromium is not installed: tests/run installs it (apt-get install chromium)")
    return found


def _config(path: Path, store: Path) -> Path:
    path.write_text(
        f"""
store_url = "sqlite:///{store}"
admin_key = "{key_digest(ADMIN)}"
key_salt = "console-salt"
allow_provider_keys = false

[keys.team-a]
digest = "{key_digest(TEAM_A)}"
providers = {{ openai = {{ api_key = "sk-a" }}, fakechat = {{ api_key = "sk-a" }} }}
[keys.team-a.limits]
requests_per_minute = 1000
usd_per_day = 1.0
usd_per_month = 20.0

[keys.team-b]
digest = "{key_digest(TEAM_B)}"
providers = {{ openai = {{ api_key = "sk-b" }}, fakechat = {{ api_key = "sk-b" }} }}

[prices."openai/gpt-test"]
input = {PRICE["input"]}
output = {PRICE["output"]}

[prices."fakechat/gpt-test"]
input = {PRICE["input"]}
output = {PRICE["output"]}
"""
    )
    return path


@pytest.fixture(scope="module")
def console(gateway_env, tmp_path_factory):
    """The gateway with an admin key (so the console), two gateway keys, prices and a background consumer."""
    here = tmp_path_factory.mktemp("console")
    env = {
        "GATEWAY_PROVIDERS__OPENAI__BASE_URL": gateway_env["GATEWAY_PROVIDERS__OPENAI__BASE_URL"],
        "GATEWAY_PROVIDERS__FAKECHAT__BASE_URL": gateway_env["GATEWAY_PROVIDERS__FAKECHAT__BASE_URL"],
        "GATEWAY_PROVIDERS__FAKECHAT__API": "chat",
        "GATEWAY_CONFIG": str(_config(here / "gateway.toml", here / "gateway.sqlite3")),
        "GATEWAY_BACKGROUND_CONSUMERS": "1",
    }
    server = Gunicorn(env, workers=2, threads=16)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def signed_in(browser, console):
    """A browser context that has logged in once; each test opens its own page in it."""
    context = browser.new_context(base_url=console.url, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    _log_in(page, ADMIN)
    page.close()
    yield context
    context.close()


@pytest.fixture
def page(signed_in):
    opened = signed_in.new_page()
    opened.set_default_timeout(WAIT)
    yield opened
    opened.close()


def _log_in(page, key: str) -> None:
    page.goto("/console/traffic")
    assert page.url.endswith("/console/login")
    page.fill("#key", key)
    page.click("button[type=submit]")


def _create(console, key: str, provider: str = "openai", **body) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", "x-portkey-provider": provider}
    headers.update(body.pop("headers", {}))
    return requests.post(
        console.url + "/v1/responses",
        json={"model": "gpt-test", "input": "hello", **body},
        headers=headers,
        timeout=30,
        stream=bool(body.get("stream")),
    )


def _shot(page, name: str) -> None:
    where = ROOT / "docs" if os.environ.get("AIGW_SCREENSHOTS") == "docs" else Path(os.environ.get("TMPDIR", "/tmp"))
    where.mkdir(exist_ok=True)
    page.screenshot(path=str(where / f"console-{name}.png"), full_page=False)


def _cost(usage: dict) -> Decimal:
    return (
        Decimal(usage["input_tokens"]) * Decimal(str(PRICE["input"]))
        + Decimal(usage["output_tokens"]) * Decimal(str(PRICE["output"]))
    ) / 1_000_000


# ------------------------------------------------------------------------------------------------ logging in
def test_the_console_lets_in_the_admin_key_alone_with_a_strict_http_only_cookie(browser, console):
    context = browser.new_context(base_url=console.url)
    page = context.new_page()
    try:
        _log_in(page, "not-the-admin-key")
        assert page.url.endswith("/console/login")
        assert "not the admin key" in page.inner_text(".error")
        _log_in(page, TEAM_A)  # a tenant's own gateway key is not the operator's
        assert "not the admin key" in page.inner_text(".error")
        _log_in(page, ADMIN)
        page.wait_for_url(re.compile(r"/console/traffic$"))
        assert page.inner_text("h1") == "Traffic"
        (cookie,) = [c for c in context.cookies() if c["name"] == "aigw_console"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
        assert not cookie["secure"]  # plain HTTP here; over HTTPS the cookie is Secure
        assert page.evaluate("document.cookie") == ""  # out of the page's scripts' reach
    finally:
        context.close()


def test_without_an_admin_key_there_is_no_console(gateway):
    for path in ("/console", "/console/login", "/console/traffic", "/console/static/console.js"):
        resp = requests.get(gateway.url + path, timeout=10, allow_redirects=False)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"] == "unknown_url"


def test_logins_are_limited_per_address_and_forged_login_forms_refused(settings):
    app = create_app({**settings, "admin_key": key_digest(ADMIN)})
    try:
        client = app.test_client()

        def attempt(address: str, key: str):
            form = client.get("/console/login", environ_base={"REMOTE_ADDR": address})
            token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            return client.post(
                "/console/login", data={"key": key, "csrf": token}, environ_base={"REMOTE_ADDR": address}
            )

        assert [attempt("192.0.2.7", "guess").status_code for _ in range(10)] == [401] * 10
        refused = attempt("192.0.2.7", ADMIN)  # the right key too, once the address has used its attempts
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "900"
        assert "aigw_console=" not in refused.headers.get("Set-Cookie", "")
        assert attempt("192.0.2.8", ADMIN).status_code == 302  # another address is not held back

        client.get("/console/login", environ_base={"REMOTE_ADDR": "192.0.2.9"})
        forged = client.post(
            "/console/login", data={"key": ADMIN, "csrf": "forged"}, environ_base={"REMOTE_ADDR": "192.0.2.9"}
        )
        assert forged.status_code == 403 and "aigw_console=" not in forged.headers.get("Set-Cookie", "")
    finally:
        close_app(app)


# ------------------------------------------------------------------------------------------------ traffic
def test_a_streamed_response_appears_live_and_opens_to_its_usage_cost_timing_and_trace(page, console):
    page.goto("/console/traffic")
    page.evaluate("window.notReloaded = true")
    trace_id = "console-" + uuid.uuid4().hex
    with _create(
        console,
        TEAM_A,
        stream=True,
        input=" ".join(["word"] * 20),
        fake={"gap_ms": 50, "deltas": 20},
        headers={"x-portkey-trace-id": trace_id},
    ) as resp:
        assert resp.status_code == 200
        events = [line for line in resp.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    import json

    final = json.loads(events[-1][6:])["response"]
    assert final["status"] == "completed"
    link = page.locator(f"#calls a:has-text('{final['id']}')")
    link.wait_for()  # the table refreshed itself: no reload
    assert page.evaluate("window.notReloaded") is True
    row = page.locator(f"#calls tr:has(a:has-text('{final['id']}'))")
    assert row.locator("td").nth(1).inner_text() == "team-a"
    assert row.locator("td.status").inner_text() == "completed"

    link.click()
    page.wait_for_url(re.compile(f"/console/responses/{final['id']}$"))
    assert page.inner_text("#provider") == "openai (native)"
    assert page.inner_text("#status") == "completed"
    charged = page.locator("table tbody tr").first
    assert charged.locator("td.trace").inner_text() == trace_id
    expected = _cost(final["usage"])
    assert charged.locator("td.cost").inner_text() == f"${expected:.6f}".rstrip("0").rstrip(".")
    assert "ms" in charged.locator("td").last.inner_text()
    # Content stays hidden unless console_show_content is on.
    assert "console_show_content" in page.inner_text("#content-hidden")
    assert "hello" not in page.content()


def test_traffic_filters_by_provider_key_and_status_and_shows_refusals(page, console):
    for _ in range(2):
        assert _create(console, TEAM_A).status_code == 200
        assert _create(console, TEAM_B, provider="fakechat").status_code == 200
    failing = _create(console, TEAM_B, fake={"status": 500})
    assert failing.status_code >= 500
    page.goto("/console/traffic")
    page.locator("#calls tr.call td.status:has-text('error')").first.wait_for()
    page.reload()  # the filters' choices are those seen when the page was made

    page.select_option("select[name=provider]", "fakechat")
    page.wait_for_url(re.compile(r"provider=fakechat"))
    providers = page.locator("#calls tr.call td:nth-child(3)").all_inner_texts()
    assert providers and set(providers) == {"fakechat"}

    page.goto("/console/traffic?key=team-b&status=error")
    statuses = page.locator("#calls tr.call td.status").all_inner_texts()
    assert statuses and all(s.startswith("5") and "error" not in s.split(" ", 1)[0] for s in statuses)
    assert set(page.locator("#calls tr.call td:nth-child(2)").all_inner_texts()) == {"team-b"}
    # A refusal opens to its row: status, error, trace id.
    page.locator("#calls a:has-text('details')").first.click()
    page.wait_for_url(re.compile(r"/console/(calls|responses)/"))
    assert page.locator("table tbody tr").first.locator("td").nth(1).inner_text() == "error"

    page.goto("/console/traffic")
    page.locator("#calls tr.call").nth(4).wait_for()
    _shot(page, "traffic")


# ------------------------------------------------------------------------------------------------ background runs
def test_a_background_run_is_watched_and_cancelled_from_the_console(page, console):
    made = _create(console, TEAM_A, background=True, input=LONG, fake={"gap_ms": 300, "deltas": 200}).json()
    assert made["status"] in ("queued", "in_progress")
    page.goto("/console/background")
    row = page.locator(f"#runs tr[data-id='{made['id']}']")
    row.locator("td.status:has-text('in_progress')").wait_for()
    row.locator("a").click()
    page.wait_for_url(re.compile(f"/console/background/{made['id']}$"))
    page.locator(".events tr td:has-text('response.output_text.delta')").first.wait_for()  # events so far, live
    page.click("#cancel")
    page.wait_for_url(re.compile(f"/console/background/{made['id']}$"))
    assert page.inner_text("#run-status") == "cancelled"
    got = requests.get(
        f"{console.url}/v1/responses/{made['id']}", headers={"Authorization": f"Bearer {TEAM_A}"}, timeout=10
    ).json()
    assert got["status"] == "cancelled"


def test_forged_or_missing_csrf_tokens_are_refused_and_change_nothing(page, console):
    made = _create(console, TEAM_A, background=True, input=LONG, fake={"gap_ms": 300, "deltas": 100}).json()
    page.goto("/console/background")
    for token in ("forged", ""):
        resp = page.request.post(f"/console/background/{made['id']}/cancel", form={"csrf": token})
        assert resp.status == 403
    resp = page.request.post("/console/logout", form={"csrf": "forged"})
    assert resp.status == 403
    got = requests.get(
        f"{console.url}/v1/responses/{made['id']}", headers={"Authorization": f"Bearer {TEAM_A}"}, timeout=10
    ).json()
    assert got["status"] in ("queued", "in_progress")
    page.goto("/console/traffic")
    assert page.inner_text("h1") == "Traffic"  # still signed in
    requests.post(
        f"{console.url}/v1/responses/{made['id']}/cancel", headers={"Authorization": f"Bearer {TEAM_A}"}, timeout=10
    )


# ------------------------------------------------------------------------------------------------ spend, health
def _today(page, key: str) -> tuple[int, str]:
    row = page.locator(f"#today-key tr[data-name='{key}']")
    if row.count() == 0:
        return 0, "$0"
    return int(row.locator("td.calls").inner_text().replace(",", "")), row.locator("td.cost").inner_text()


def _usd(text: str) -> Decimal:
    return Decimal(text.lstrip("$"))


def test_spend_moves_after_requests_with_charts_and_the_limits(page, console):
    page.goto("/console/spend")
    calls_before, cost_before = _today(page, "team-b")
    usages = [_create(console, TEAM_B).json()["usage"] for _ in range(3)]
    added = sum((_cost(u) for u in usages), Decimal(0))
    deadline = time.monotonic() + 10
    while True:  # usage rows are written within half a second of each call
        page.reload()
        calls, cost = _today(page, "team-b")
        if calls >= calls_before + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert calls == calls_before + 3
    assert _usd(cost) - _usd(cost_before) == pytest.approx(added, abs=Decimal("0.000001"))
    # The charts are drawn (uPlot's canvases) from the package's own copy of the library.
    assert page.locator(".chart canvas").count() == 4
    assert page.evaluate("typeof uPlot") == "function"
    # team-a's budgets and how close it is to them.
    limits = page.locator(".limits tr[data-key='team-a']")
    assert "of $1" in limits.inner_text() and "of $20" in limits.inner_text()
    assert limits.locator("meter").count() == 2
    _shot(page, "spend")


def test_health_shows_the_store_the_providers_and_the_settings_masked(page, console):
    page.goto("/console/health")
    assert page.inner_text("#store-health").startswith("ready")
    assert "openai" in page.inner_text("#providers")
    settings = page.inner_text("#settings")
    assert '"admin_key": "***"' in settings and '"digest": "***"' in settings
    assert key_digest(ADMIN).split(":")[1] not in page.content()
    assert hashlib.sha256(TEAM_A.encode()).hexdigest() not in page.content()
    assert TEAM_A not in page.content() and ADMIN not in page.content()


# ------------------------------------------------------------------------------------------------ logging out
def test_logging_out_ends_the_session_even_for_a_copy_of_its_cookie(browser, console):
    context = browser.new_context(base_url=console.url)
    page = context.new_page()
    try:
        _log_in(page, ADMIN)
        page.wait_for_url(re.compile(r"/console/traffic$"))
        (cookie,) = [c for c in context.cookies() if c["name"] == "aigw_console"]
        page.click("#logout")
        page.wait_for_url(re.compile(r"/console/login$"))
        page.goto("/console/traffic")
        assert page.url.endswith("/console/login")
        replayed = requests.get(
            console.url + "/console/traffic",
            cookies={"aigw_console": cookie["value"]},
            allow_redirects=False,
            timeout=10,
        )
        assert replayed.status_code == 302 and replayed.headers["Location"].endswith("/console/login")
    finally:
        context.close()


# ------------------------------------------------------------------------------------------------ in process
def _signed_in_client(app):
    client = app.test_client()
    form = client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    assert client.post("/console/login", data={"key": ADMIN, "csrf": token}).status_code == 302
    return client


@pytest.mark.parametrize("shown", [False, True], ids=["content-off", "content-on"])
def test_content_shows_only_with_console_show_content(settings, shown):
    app = create_app({**settings, "admin_key": key_digest(ADMIN), "console_show_content": shown})
    try:
        api = app.test_client()
        headers = {"Authorization": "Bearer sk-test", "x-portkey-provider": "openai"}
        conv = api.post("/v1/conversations", json={}, headers=headers).json["id"]
        made = api.post(
            "/v1/responses",
            json={"model": "gpt-test", "input": "the secret word is marmalade", "conversation": conv},
            headers=headers,
        ).json
        app.extensions["gateway"].store.usage.flush()
        client = _signed_in_client(app)
        page = client.get(f"/console/responses/{made['id']}").text
        assert ("marmalade" in page) is shown
        assert made["output"][0]["content"][0]["text"][:20] in page if shown else "content-hidden" in page
        listed = client.get("/console/conversations").text
        assert conv in listed
        opened = client.get(f"/console/conversations/{conv}").text
        assert "message (user)" in opened and "message (assistant)" in opened
        assert ("marmalade" in opened) is shown
        # Another tenant's key changes nothing here: the console is the operator's, and shows key names only.
        assert "sk-test" not in page + listed + opened
    finally:
        close_app(app)


def test_a_limit_refusal_is_a_traffic_row_and_the_report_leaves_it_out(settings):
    config = {
        **settings,
        "admin_key": key_digest(ADMIN),
        "keys": {"team-a": {"digest": key_digest(TEAM_A), "providers": {"openai": {"api_key": "sk-a"}}}},
        "limits": {"default": {"models": ["gpt-4o-mini"]}},
        "allow_provider_keys": False,
    }
    app = create_app(config)
    try:
        api = app.test_client()
        headers = {"Authorization": f"Bearer {TEAM_A}", "x-portkey-provider": "openai"}
        made = api.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "x"}, headers=headers)
        assert made.status_code == 200
        refused = api.post("/v1/responses", json={"model": "gpt-test", "input": "x"}, headers=headers)
        assert refused.status_code == 403
        assert api.post("/v1/responses", json={"model": 7}, headers=headers).status_code == 400
        unknown = api.post(
            "/v1/responses",
            json={"model": "gpt-test", "input": "x"},
            headers={**headers, "Authorization": "Bearer nope"},
        )
        assert unknown.status_code == 401
        store = app.extensions["gateway"].store
        store.usage.flush()
        rows = store.console.calls({})
        # Newest first: the model refused, the call. A body refused before the caller is known (the body is
        # checked first), or an unknown key's request, adds nothing.
        assert [(r["kind"], r["http_status"], r["error"], r["who"]) for r in rows] == [
            ("error", 403, "model_not_allowed", "team-a"),
            ("response", None, None, "team-a"),
        ]
        assert rows[0]["trace_id"] == refused.headers["x-portkey-trace-id"]
        assert rows[1]["duration_ms"] > 0 and rows[1]["retries"] == 0
        report = store.usage.report(0, time.time() + 1, ["key"])
        assert [(r["key"], r["requests"]) for r in report] == [("team-a", 1)], report
        page = _signed_in_client(app).get("/console/traffic?status=error").text
        assert "403 model_not_allowed" in page and '<td class="status">completed' not in page
    finally:
        close_app(app)


def test_logins_count_against_the_client_nginx_names_and_ipv6_by_its_64():
    from gateway.console.session import client_address

    assert client_address("192.0.2.1", None) == "192.0.2.1"
    # Only this host's proxy is believed, and only the address it appended last.
    assert client_address("127.0.0.1", "10.9.9.9, 198.51.100.4") == "198.51.100.4"
    assert client_address("192.0.2.1", "198.51.100.4") == "192.0.2.1"
    assert client_address("2001:db8:1:2:3:4:5:6", None) == client_address("2001:db8:1:2:ffff::1", None)
    assert client_address("::ffff:192.0.2.9", None) == "192.0.2.9"


def test_settings_shown_with_every_credential_in_a_url_masked():
    from gateway.config import Settings

    shown = Settings.load(
        {
            "store_url": "postgresql://u:pa/ss@db.example/gw?sslmode=require&password=other",
            "limits_store": "redis://:secret@cache.example:6379/2",
            "background_queue": "redis://cache.example/1?password=hunter2",
            "admin_key": key_digest(ADMIN),
            "keys": {"team-a": {"digest": key_digest(TEAM_A), "providers": {"openai": {"api_key": "sk-live"}}}},
        },
        environ={},
    ).masked()
    text = repr(shown)
    for secret in ("pa/ss", "other", "secret", "hunter2", "sk-live", key_digest(ADMIN), key_digest(TEAM_A)):
        assert secret not in text, secret
    assert shown["store_url"] == "postgresql://u:***@db.example/gw?sslmode=require&password=***"


def test_refusal_rows_give_way_to_charged_rows_while_the_store_cannot_take_them(settings):
    app = create_app(settings)
    try:
        usage = app.extensions["gateway"].store.usage
        usage.max_pending = 10
        usage.interval = 3600  # the writer waits: rows stay pending
        lost = []
        usage._lost = lost.append
        for kind in ["error"] * 8 + ["response"] * 8:
            usage.add({"kind": kind})
        kinds = [row["kind"] for row in usage._pending]
        assert kinds.count("error") == 5 and kinds.count("response") == 5 and sum(lost) == 3
        usage._pending.clear()
    finally:
        close_app(app)

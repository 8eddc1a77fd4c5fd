"""The operator's console, ``/console``: live traffic, a call's details, conversations, background runs, spend
and health, in the browser. Server-rendered (Flask's Jinja templates), with one small script and a charting
library served from this package (no build step, no CDN: it works offline).

It exists only while ``admin_key`` is set (``init_app`` registers it then; else ``/console`` is the unknown
path it always was), and only for the admin key: a login with it, limited per address, starts a session
(session.py). Every form that changes something carries the session's CSRF token. Tenants' data is shown by
key name, never by key; inputs and outputs only when ``console_show_content`` is on.

An API request pays nothing for it: its hooks are the blueprint's own, run for ``/console`` paths alone.
"""

from __future__ import annotations

import datetime
import time
from decimal import Decimal
from typing import Any

import orjson
from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from ..errors import StoreUnavailable
from ..limits import Unavailable
from ..services import current_services
from ..store.console import FILTERS, STATUSES
from ..store.usage import period_start
from .session import COOKIE, LOGIN_COOKIE, LOGIN_MAX_AGE, MAX_AGE, Sessions, client_address, same_token

bp = Blueprint("console", __name__, url_prefix="/console", template_folder="templates", static_folder="static")

_OPEN = frozenset({"console.login", "console.static"})  # the views a visitor without a session may see
_SECURITY_HEADERS = {
    # Scripts and styles from this package only: nothing inline, nothing from elsewhere.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.jinja_env.filters.update(when=_when, who=_who, usd=_usd, ms=_ms, number=_number)


def _sessions() -> Sessions:
    sessions = current_app.extensions.get("gateway.console")
    if sessions is None:
        svc = current_services()
        sessions = Sessions(svc.store, svc.settings.admin_key, svc.limits.counter)
        current_app.extensions["gateway.console"] = sessions
    return sessions


# ---------------------------------------------------------------------------------------------------- hooks
@bp.before_request
def _signed_in() -> Response | None:
    if request.endpoint in _OPEN:
        return None
    session = _sessions().read(request.cookies.get(COOKIE))
    if session is None:
        if request.headers.get("x-console-fragment"):
            return Response("signed out", status=401, mimetype="text/plain")
        return redirect(url_for("console.login"))
    g.console_session = session
    if request.method == "POST" and not same_token(request.form.get("csrf"), session.get("csrf")):
        abort(403, "The form's CSRF token is missing or wrong: reload the page and try again.")
    return None


@bp.after_request
def _headers(resp: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    if request.endpoint != "console.static":
        resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.errorhandler(StoreUnavailable)
def _store_down(_err: StoreUnavailable) -> tuple[str, int]:
    return render_template("console/error.html", status=503, message="The store cannot be reached now."), 503


@bp.errorhandler(403)
@bp.errorhandler(404)
def _refused(err: Any) -> tuple[str, int]:
    return render_template("console/error.html", status=err.code, message=err.description), err.code


def _page(template: str, **context: Any) -> str:
    session = g.get("console_session")
    return render_template(
        f"console/{template}", csrf=session["csrf"] if session else "", section=request.endpoint, **context
    )


def _cookie(resp: Response, name: str, value: str, max_age: int) -> None:
    resp.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )


def _forget(resp: Response, name: str) -> None:
    _cookie(resp, name, "", 0)  # expired at once, with the flags it was set with


# ---------------------------------------------------------------------------------------------------- login
@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    sessions = _sessions()
    if request.method == "GET":
        if sessions.read(request.cookies.get(COOKIE)) is not None:
            return redirect(url_for("console.traffic"))
        return _login_form()
    if not same_token(request.form.get("csrf"), sessions.login_token(request.cookies.get(LOGIN_COOKIE))):
        return _login_form("The login form had expired or was not this gateway's: try again.", 403)
    try:
        allowed = sessions.attempt(client_address(request.remote_addr, request.headers.get("X-Forwarded-For")))
    except Unavailable:
        return _login_form("Logins are counted where the limits are, which cannot be reached now.", 503)
    if not allowed:
        resp = _login_form("Too many login attempts from this address: wait a quarter of an hour.", 429)
        resp.headers["Retry-After"] = "900"
        return resp
    if not sessions.admin(request.form.get("key", "")):
        return _login_form("That is not the admin key.", 401)
    value, _ = sessions.start()
    resp = redirect(url_for("console.traffic"))
    _cookie(resp, COOKIE, value, MAX_AGE)
    _forget(resp, LOGIN_COOKIE)
    return resp


def _login_form(error: str | None = None, status: int = 200) -> Response:
    token, cookie = _sessions().login_form()
    resp = make_response(render_template("console/login.html", csrf=token, error=error), status)
    _cookie(resp, LOGIN_COOKIE, cookie, LOGIN_MAX_AGE)
    return resp


@bp.post("/logout")
def logout() -> Response:
    _sessions().end(g.console_session)
    resp = redirect(url_for("console.login"))
    _forget(resp, COOKIE)
    return resp


# ---------------------------------------------------------------------------------------------------- traffic
@bp.get("/")
def home() -> Response:
    return redirect(url_for("console.traffic"))


def _filters() -> dict[str, str]:
    found = {name: request.args.get(name, "")[:256] for name in (*FILTERS, "status")}
    if found["status"] not in STATUSES:
        found["status"] = ""
    return {name: value for name, value in found.items() if value}


@bp.get("/traffic")
def traffic() -> str:
    svc = current_services()
    filters = _filters()
    calls = svc.store.console.calls(filters)
    choices = svc.store.console.choices(time.time() - 7 * 86400)
    return _page("traffic.html", calls=calls, filters=filters, choices=choices, statuses=STATUSES)


@bp.get("/traffic/rows")
def traffic_rows() -> str:
    calls = current_services().store.console.calls(_filters())
    return render_template("console/_calls.html", calls=calls)


@bp.get("/calls/<int:row_id>")
def call(row_id: int) -> Response | str:
    row = current_services().store.console.call(row_id)
    if row is None:
        abort(404, "No such call.")
    if row["response_id"]:
        return redirect(url_for("console.response", response_id=row["response_id"]))
    return _page("response.html", response_id=None, rows=[row], record=None, items=None)


@bp.get("/responses/<response_id>")
def response(response_id: str) -> str:
    svc = current_services()
    rows = svc.store.console.rows_of(response_id)
    owner = svc.store.owner_of(response_id)
    record = svc.store.get(owner, response_id) if owner is not None else None
    if record is None and not rows:
        abort(404, f"No response {response_id} in the store or the usage table.")
    items = None
    if record is not None and svc.settings.console_show_content:
        items = svc.store.input_items(owner, response_id, limit=100, order="asc")
    return _page(
        "response.html",
        response_id=response_id,
        rows=rows,
        record=record,
        body=record.body if record is not None else None,
        items=items,
        show_content=svc.settings.console_show_content,
        pretty=_pretty,
    )


# ---------------------------------------------------------------------------------------------------- conversations
@bp.get("/conversations")
def conversations() -> str:
    return _page("conversations.html", conversations=current_services().store.console.conversations())


@bp.get("/conversations/<conversation_id>")
def conversation(conversation_id: str) -> str:
    svc = current_services()
    info, items = svc.store.console.conversation(conversation_id)
    if info is None:
        abort(404, f"No conversation {conversation_id}.")
    return _page(
        "conversation.html",
        info=info,
        items=items,
        show_content=svc.settings.console_show_content,
        pretty=_pretty,
        summary=_summary,
    )


# ---------------------------------------------------------------------------------------------------- background
@bp.get("/background")
def background() -> str:
    return _page("background.html", runs=current_services().store.console.runs())


@bp.get("/background/rows")
def background_rows() -> str:
    return render_template("console/_runs.html", runs=current_services().store.console.runs(), csrf=_csrf())


@bp.get("/background/<response_id>")
def run(response_id: str) -> str:
    svc = current_services()
    info, events = svc.store.console.run(response_id)
    if info is None:
        abort(404, f"No background run {response_id}.")
    return _page(
        "run.html", info=info, events=events, show_content=svc.settings.console_show_content, pretty=_pretty_text
    )


@bp.get("/background/<response_id>/events")
def run_events(response_id: str) -> str:
    svc = current_services()
    info, events = svc.store.console.run(response_id)
    if info is None:
        abort(404, f"No background run {response_id}.")
    return render_template(
        "console/_events.html",
        csrf=_csrf(),
        info=info,
        events=events,
        show_content=svc.settings.console_show_content,
        pretty=_pretty_text,
    )


@bp.post("/background/<response_id>/cancel")
def cancel(response_id: str) -> Response:
    svc = current_services()
    owner = svc.store.owner_of(response_id)
    record = svc.store.get(owner, response_id) if owner is not None else None
    if record is None or record.mode != "background":
        abort(404, f"No background run {response_id}.")
    svc.background.cancel(record)
    return redirect(url_for("console.run", response_id=response_id))


def _csrf() -> str:
    return g.console_session["csrf"]


# ---------------------------------------------------------------------------------------------------- spend
@bp.get("/spend")
def spend() -> str:
    svc = current_services()
    reads = svc.store.console
    now = time.time()
    day, month = period_start("day", now), period_start("month", now)
    hourly = {
        by: _series(reads.spend_series(now - 86400, 3600, by), now - 86400, 3600, by) for by in ("key", "provider")
    }
    daily = {
        by: _series(reads.spend_series(now - 30 * 86400, 86400, by), now - 30 * 86400, 86400, by)
        for by in ("key", "model")
    }
    today = {by: reads.totals(day, by) for by in FILTERS}
    return _page(
        "spend.html",
        # Names in it are callers' (models): "<" escaped, no "</script>" can end its element early.
        charts=orjson.dumps({"hourly": hourly, "daily": daily}).decode().replace("<", "\\u003c"),
        today=today,
        limits=_limits(svc, day, month),
    )


def _series(points: list[tuple[int, str, Decimal]], since: float, bucket: int, by: str) -> dict:
    """uPlot's data: the buckets' start times, and one list of USD per group (the 8 costliest, then the rest
    together)."""
    start = int(since // bucket) * bucket
    slots = list(range(start, int(time.time() // bucket) * bucket + 1, bucket))
    index = {slot: i for i, slot in enumerate(slots)}
    totals: dict[str, Decimal] = {}
    for _, name, cost in points:
        totals[name] = totals.get(name, Decimal(0)) + cost
    top = sorted(totals, key=lambda name: (-totals[name], name))[:8]
    series = {name: [0.0] * len(slots) for name in top}
    rest: list[float] | None = None  # apart from the named ones: a group may be called "other" itself
    for slot, name, cost in points:
        if slot not in index:
            continue
        line = series.get(name)
        if line is None:
            line = rest = rest or [0.0] * len(slots)
        line[index[slot]] += float(cost)
    named = [{"name": _who(name) if by == "key" else name, "values": values} for name, values in series.items()]
    if rest is not None:
        named.append({"name": f"the {len(totals) - len(top)} others", "values": rest})
    return {"x": slots, "series": named}


def _limits(svc: Any, day: float, month: float) -> list[dict]:
    """Each key with limits (and the default's policy): its budgets, what it spent against them, its rates."""
    out = []
    limits = svc.limits
    policies = [(name, policy, True) for name, policy in sorted(limits.keys.items())]
    if limits.default is not None:
        policies.append(("default", limits.default, False))
    for name, policy, own in policies:
        entry: dict[str, Any] = {"name": name, "policy": policy, "own": own, "budgets": []}
        for label, since, budget in (("today", day, policy.usd_per_day), ("this month", month, policy.usd_per_month)):
            if budget is None:
                continue
            spent = svc.store.usage.spent(name, since) if own else None
            share = None if spent is None or not budget else min(1.0, float(spent) / budget)
            entry["budgets"].append({"label": label, "budget": budget, "spent": spent, "share": share})
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------------------- health
@bp.get("/health")
def health() -> str:
    svc = current_services()
    ready, why = svc.store.ready()
    return _page(
        "health.html",
        store={"ready": ready, "why": why, "url": svc.settings.masked()["store_url"]},
        queue=svc.background.health.state(),
        limits=svc.limits.state(),
        rates=svc.store.console.error_rates(time.time() - 900),
        settings=orjson.dumps(svc.settings.masked(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
    )


# ---------------------------------------------------------------------------------------------------- formats
def _when(moment: Any) -> str:
    if moment is None:
        return ""
    return datetime.datetime.fromtimestamp(float(moment), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _who(name: Any) -> str:
    """A tenant or usage row's caller as the console names it: a gateway key's name; a caller's own provider
    key by the start of its digest (never the key, which the gateway does not keep)."""
    if not isinstance(name, str) or not name:
        return ""
    if name.startswith("key:"):
        return name[4:]
    if name.startswith("pk:"):
        return "provider key " + name[3:11]
    return name


def _usd(value: Any) -> str:
    if value is None:
        return "unpriced"
    return f"${Decimal(value):.6f}".rstrip("0").rstrip(".") if value else "$0"


def _ms(value: Any) -> str:
    return "" if value is None else f"{float(value):,.0f} ms"


def _number(value: Any) -> str:
    return "" if value is None else f"{int(value):,}"


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _pretty_text(text: str) -> str:
    try:
        return _pretty(orjson.loads(text))
    except orjson.JSONDecodeError:
        return text


def _summary(item: Any) -> str:
    """An item's kind, without its content: ``message (user)``, ``function_call get_weather``."""
    if not isinstance(item, dict):
        return "?"
    kind = str(item.get("type") or "message")
    if kind == "message":
        return f"message ({item.get('role', '?')})"
    name = item.get("name")
    return f"{kind} {name}" if isinstance(name, str) else kind

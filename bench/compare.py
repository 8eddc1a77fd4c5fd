#!/usr/bin/env python3
"""This gateway against a direct call and against the peer gateways, in one run on one machine.

    python bench/compare.py [--peers portkey,litellm] [--concurrency 1,16,64] [--streams 100,500,1000]
                            [--rounds 3] [--against REV] [--store on|off] [--emulated] [--limits] [--console]

For each target (direct to the fake provider, this gateway under gunicorn with its SQLite store on, the
Chat Completions emulation with --emulated, and the peers named): non-streaming latency and requests per
second at each concurrency (wrk, closed loop), then streams: N users arrive over up to 2.5 s and run
2-second streams back to back on keep-alive connections; a stream is OK with HTTP 200, every text delta
and its terminal event, and "peak open" counts the streams open at once. CPU per
request or stream and memory (RSS) per process come from /proc. Results: a Markdown table on stdout
and JSON under --out. Everything runs on 127.0.0.1 and every step is bounded in time.

With --rounds the targets take turns in each round and the report gives medians with their spread;
--against REV installs that commit in a venv of its own under /tmp and measures it beside this tree, so a
change is judged against its parent in the same run. --limits adds this tree with a gateway key that has
every limit (per minute, per day and month, counted in the store; none ever reached) and a price: what
limits and cost add to a request.

Needs wrk (`apt-get install wrk`). The peers are installed on first use under $PEERS_DIR (default
/tmp/gateway-peers), never in the repository: Portkey's gateway from npm (needs node), LiteLLM's proxy
from PyPI in its own venv.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("PEERS_DIR", "/tmp/gateway-peers"))
PORTKEY_VERSION = os.environ.get("PORTKEY_VERSION", "1.15.2")
LITELLM_VERSION = os.environ.get("LITELLM_VERSION", "1.108.7")
UPSTREAM_PORT = 18100
UPSTREAM = f"http://127.0.0.1:{UPSTREAM_PORT}/v1"
UPSTREAM_KEY = "sk-fake-upstream"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ----------------------------------------------------------------------------------------- processes
def tree(pid: int) -> list[int]:
    """pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE / 2**20
    return 0.0


class Process:
    """A server started for the run, stopped with its whole process tree."""

    def __init__(self, name: str, cmd: list[str], ready: str, *, env: dict | None = None, cwd: Path | None = None):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited at start; its log: {self.log.name}")
            try:
                urllib.request.urlopen(ready, timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{name} not ready in 120 s; its log: {self.log.name}")

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def stop(self) -> None:
        for p in reversed(self.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            for p in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            self.proc.wait()


def fake_upstream(deltas: int, first_ms: float, gap_ms: float) -> Process:
    """bench/fake_upstream.py on UPSTREAM_PORT, streaming ``deltas`` deltas, the first after ``first_ms``."""
    cmd = [sys.executable, str(ROOT / "bench/fake_upstream.py"), "--port", str(UPSTREAM_PORT)]
    cmd += ["--deltas", str(deltas), "--first-ms", str(first_ms), "--gap-ms", str(gap_ms)]
    return Process("fake-upstream", cmd, f"http://127.0.0.1:{UPSTREAM_PORT}/v1/health")


# ------------------------------------------------------------------------------------------ targets
def _free_store() -> str:
    return tempfile.mkdtemp(prefix="gateway-bench-store-")


def _against(rev: str) -> tuple[Path, str]:
    """Another commit of this gateway, checked out and installed in a venv of its own under /tmp.

    Returns its source tree and its python: the same harness then runs it as one more target.
    """
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True)
    sha = sha.stdout.strip()
    where = Path(tempfile.gettempdir()) / "gateway-against" / sha[:12]
    src, venv = where / "src", where / "venv"
    if not (venv / "bin/gunicorn").exists():
        shutil.rmtree(where, ignore_errors=True)
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", str(src)], check=True)
    return src, str(venv / "bin/python")


@contextlib.contextmanager
def gateway(
    emulated: bool,
    workers: int,
    root: Path = ROOT,
    python: str = sys.executable,
    limited: bool = False,
    console: bool = False,
) -> Iterator[dict]:
    store = _free_store()
    env = {
        "GATEWAY_BIND": "127.0.0.1:18180",
        "GATEWAY_PROVIDERS__OPENAI__BASE_URL": UPSTREAM,
        "GATEWAY_PROVIDERS__FAKECHAT__BASE_URL": UPSTREAM,
        "GATEWAY_PROVIDERS__FAKECHAT__API": "chat",
        "GATEWAY_STORE_URL": f"sqlite:///{store}/gateway.sqlite3",
    }
    if workers:
        env["GATEWAY_WORKERS"] = str(workers)
    if console:  # an admin key, so the operator's console is served beside the API (nobody opens it here)
        env["GATEWAY_ADMIN_KEY"] = "sha256:" + hashlib.sha256(b"bench-admin").hexdigest()
    key = UPSTREAM_KEY
    if limited:
        # A gateway key with every limit (none ever reached) and a price for the model: what checking the
        # limits, counting in the store, reading the day's and month's spend and pricing each response cost.
        key = "gw-bench-limited"
        env.update(
            {
                "GATEWAY_KEYS__BENCH__DIGEST": "sha256:" + hashlib.sha256(key.encode()).hexdigest(),
                "GATEWAY_KEYS__BENCH__PROVIDERS__OPENAI__API_KEY": UPSTREAM_KEY,
                "GATEWAY_KEYS__BENCH__PROVIDERS__FAKECHAT__API_KEY": UPSTREAM_KEY,
                "GATEWAY_KEYS__BENCH__LIMITS__REQUESTS_PER_MINUTE": "1000000000",
                "GATEWAY_KEYS__BENCH__LIMITS__TOKENS_PER_MINUTE": "1000000000000",
                "GATEWAY_KEYS__BENCH__LIMITS__USD_PER_DAY": "1000000",
                "GATEWAY_KEYS__BENCH__LIMITS__USD_PER_MONTH": "1000000",
            }
        )
    proc = Process(
        "gateway",
        [python, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
        "http://127.0.0.1:18180/healthz",
        env=env,
        cwd=root,
    )
    try:
        yield {
            "url": "http://127.0.0.1:18180/v1",
            "headers": {
                "Authorization": f"Bearer {key}",
                "x-portkey-provider": "fakechat" if emulated else "openai",
            },
            "proc": proc,
            "gateway": True,
        }
    finally:
        proc.stop()
        shutil.rmtree(store, ignore_errors=True)


def _install_portkey() -> Path:
    where = PEERS_DIR / "portkey"
    entry = where / "node_modules/@portkey-ai/gateway/build/start-server.js"
    if not entry.exists():
        where.mkdir(parents=True, exist_ok=True)
        package = {"name": "bench-portkey", "private": True, "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION}}
        (where / "package.json").write_text(json.dumps(package))
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=where, check=True)
    return entry


@contextlib.contextmanager
def portkey() -> Iterator[dict]:
    entry = _install_portkey()
    proc = Process(
        "portkey",
        ["node", str(entry), "--port=18187", "--headless"],
        "http://127.0.0.1:18187/",
        env={"NODE_ENV": "production"},
        cwd=entry.parent,
    )
    try:
        yield {
            "url": "http://127.0.0.1:18187/v1",
            "headers": {
                "Authorization": f"Bearer {UPSTREAM_KEY}",
                "x-portkey-provider": "openai",
                "x-portkey-custom-host": UPSTREAM,
            },
            "proc": proc,
        }
    finally:
        proc.stop()


@contextlib.contextmanager
def litellm() -> Iterator[dict]:
    venv = PEERS_DIR / "litellm-venv"
    if not (venv / "bin/litellm").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], check=True)
    config = PEERS_DIR / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
        f"      api_base: {UPSTREAM}\n      api_key: {UPSTREAM_KEY}\n"
        "general_settings:\n  master_key: sk-bench-master\n"
    )
    proc = Process(
        "litellm",
        [
            str(venv / "bin/litellm"),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            "18140",
            "--num_workers",
            str(os.cpu_count() or 1),
        ],
        "http://127.0.0.1:18140/health/liveliness",
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION"},
        cwd=PEERS_DIR,
    )
    try:
        yield {"url": "http://127.0.0.1:18140/v1", "headers": {"Authorization": "Bearer sk-bench-master"}, "proc": proc}
    finally:
        proc.stop()


@contextlib.contextmanager
def direct(emulated: bool) -> Iterator[dict]:
    yield {"url": UPSTREAM, "headers": {"Authorization": f"Bearer {UPSTREAM_KEY}"}, "proc": None, "chat": emulated}


# --------------------------------------------------------------------------------------- non-stream
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
for k, v in string.gmatch(os.getenv("BENCH_HEADERS"), "([^\\n:]+): ([^\\n]+)") do wrk.headers[k] = v end
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, headers: dict, body: dict, concurrency: int, seconds: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        env = {
            **os.environ,
            "BENCH_BODY": json.dumps(body),
            "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items()),
        }
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout=10s", "-s", script.name, url],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        ).stdout
    pct = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)\s*$", out, re.M))  # wrk pads "1.54s "
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": _ms(pct["50"]),
        "p99": _ms(pct["99"]),
        "failed": (int(bad.group(1)) if bad else 0),
        "socket_errors": errors.group(1) if errors else "",
    }


# ------------------------------------------------------------------------------------------ streams
async def one_stream(reader, writer, target: tuple[str, str, dict, bytes, bool]) -> tuple[dict, bool]:
    """One streaming request on an open connection: times to first byte and first delta, and the end.

    Returns the measures and whether the connection can carry the next request.
    """
    host, path, headers, body, chat = target
    t0 = time.monotonic()
    out: dict = {"start": t0, "ok": False, "deltas": 0}
    reusable = False
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status_line = await reader.readline()
        out["status"] = int(status_line.split()[1])
        chunked, reusable = False, True
        while (line := (await reader.readline()).lower()) not in (b"\r\n", b""):
            chunked = chunked or (line.startswith(b"transfer-encoding:") and b"chunked" in line)
            if line.startswith(b"connection:") and b"close" in line:
                reusable = False
        reusable = reusable and chunked
        buffer = b""
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                data = (await reader.readexactly(size + 2))[:-2]
                if size == 0:
                    break
            else:
                data = await reader.read(65536)
                if not data:
                    break
            out.setdefault("ttfb", time.monotonic() - t0)
            buffer += data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        out["ok"] = True
                        continue
                    parsed = orjson.loads(payload)
                    kind = parsed.get("type")
                    if kind == "response.output_text.delta" or (
                        chat and any((c.get("delta") or {}).get("content") for c in parsed.get("choices") or [])
                    ):
                        out["deltas"] += 1
                        out.setdefault("ttft", time.monotonic() - t0)
                    elif kind == "response.completed":
                        out["ok"] = True
    except (OSError, ValueError, IndexError, orjson.JSONDecodeError, asyncio.IncompleteReadError) as exc:
        out["error"] = type(exc).__name__
        reusable = False
    out["end"] = time.monotonic()
    return out, reusable


async def client(url: str, headers: dict, body: bytes, chat: bool, delay: float, until: float) -> list[dict]:
    """A user running streams back to back on one keep-alive connection (a new one after an error)."""
    await asyncio.sleep(delay)
    host, port, path = re.match(r"http://([^:/]+):(\d+)(/.*)", url).groups()
    runs: list[dict] = []
    conn = None
    while time.monotonic() < until:
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, int(port), limit=2**20)
        except OSError as exc:
            now = time.monotonic()
            runs.append({"start": now, "end": now, "ok": False, "deltas": 0, "error": type(exc).__name__})
            await asyncio.sleep(0.1)
            continue
        result, reusable = await one_stream(*conn, (host, path, headers, body, chat))
        runs.append(result)
        if not reusable:
            conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()
    return runs


async def streams(url: str, headers: dict, body: dict, chat: bool, users: int, seconds: float, expect: int) -> dict:
    payload = json.dumps(body).encode()
    # Users arrive over up to 2.5 s (400 a second), then keep their stream going for `seconds`.
    ramp = min(2.5, users / 400)
    until = time.monotonic() + ramp + seconds
    per_user = await asyncio.wait_for(
        asyncio.gather(*(client(url, headers, payload, chat, ramp * i / users, until) for i in range(users))),
        ramp + seconds + 120,
    )
    runs = [r for user in per_user for r in user]
    ok = [r for r in runs if r["ok"] and r.get("status") == 200 and r["deltas"] == expect]
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    open_now = peak = 0
    for _, step in edges:
        open_now += step
        peak = max(peak, open_now)

    def p(key: str, q: float) -> float | None:
        values = sorted(r[key] for r in ok if key in r)
        return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else None

    return {
        "ok": len(ok),
        "count": len(runs),
        "peak_open": peak,
        "ttfb_p50": p("ttfb", 0.5),
        "ttft_p50": p("ttft", 0.5),
        "ttft_p99": p("ttft", 0.99),
        "errors": sorted({r.get("error") or f"status {r.get('status')}" for r in runs if r not in ok}),
    }


def run_async(coro):
    try:
        import uvloop  # the client shares the cores with what it measures: the cheaper loop, the better
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# ------------------------------------------------------------------------------------------------ run
def measure(name: str, target: dict, args) -> dict:
    chat = target.get("chat", False)
    url = target["url"] + ("/chat/completions" if chat else "/responses")
    message = "Say hello in one short sentence."
    body = (
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": message}]}
        if chat
        else {"model": "gpt-4o-mini", "input": message}
    )
    if target.get("gateway") and args.store == "off":
        body["store"] = False
    pids = (lambda: target["proc"].pids()) if target["proc"] else (lambda: [])
    result: dict = {"name": name, "nonstream": {}, "streams": {}}
    for _ in range(3):  # warm-up: imports, pools, caches; also proves the target answers
        warm = wrk(url, target["headers"], body, 16, 2)
        if warm["requests"] and not warm["failed"]:
            break
        time.sleep(2)
    else:
        raise SystemExit(f"{name}: requests fail during warm-up ({warm})")
    if target["proc"]:
        result["rss_idle_mb"] = {str(p): round(rss_mb(p), 1) for p in pids()}
    for c in args.concurrency:
        cpu0 = cpu_seconds(pids())
        step = wrk(url, target["headers"], body, c, args.duration)
        if target["proc"] and step["requests"]:
            step["cpu_ms_per_request"] = (cpu_seconds(pids()) - cpu0) * 1000 / step["requests"]
        result["nonstream"][c] = step
        print(f"  {name} c={c}: {step['rps']:.0f} req/s, p50 {step['p50']:.2f} ms", file=sys.stderr, flush=True)
    for n in args.streams:
        cpu0 = cpu_seconds(pids())
        stream_body = {**body, "stream": True}
        step = run_async(streams(url, target["headers"], stream_body, chat, n, args.stream_seconds, args.deltas))
        if target["proc"] and step["ok"]:
            step["cpu_ms_per_stream"] = (cpu_seconds(pids()) - cpu0) * 1000 / step["ok"]
        result["streams"][n] = step
        print(
            f"  {name} {n} users: {step['ok']}/{step['count']} streams ok, peak {step['peak_open']} open",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(1)
    if target["proc"]:
        result["rss_after_mb"] = {str(p): round(rss_mb(p), 1) for p in pids()}
    return result


def median_of(rounds: list[list[dict]]) -> list[dict]:
    """Each target's median over the rounds, field by field; ``spread`` keeps each field's (min, max)."""
    if len(rounds) == 1:
        return rounds[0]
    out = []
    for i, first in enumerate(rounds[0]):
        runs = [r[i] for r in rounds]
        merged: dict = {"name": first["name"], "nonstream": {}, "streams": {}, "rounds": len(runs)}
        for part in ("nonstream", "streams"):
            for step in first[part]:
                values = [run[part][step] for run in runs if step in run[part]]
                merged[part][step] = _median_fields(values)
        if "rss_after_mb" in first:
            merged["rss_after_mb"] = runs[-1]["rss_after_mb"]
        out.append(merged)
    return out


def _median_fields(values: list[dict]) -> dict:
    merged: dict = {"spread": {}}
    for key in values[0]:
        numbers = [v[key] for v in values if isinstance(v.get(key), int | float)]
        if len(numbers) == len(values):
            merged[key] = statistics.median(numbers)
            merged["spread"][key] = (min(numbers), max(numbers))
        else:
            merged[key] = values[-1].get(key)
    return merged


def _spread(step: dict, key: str, fmt: str = "{:.2f}") -> str:
    """``median (min–max)`` when there were rounds, else the value alone."""
    low_high = step.get("spread", {}).get(key)
    value = fmt.format(step[key])
    if not low_high or low_high[0] == low_high[1]:
        return value
    return f"{value} ({fmt.format(low_high[0])}–{fmt.format(low_high[1])})"


def report(results: list[dict], args) -> str:
    by_name = {r["name"]: r for r in results}
    lines = [
        f"{os.cpu_count()} cores; fake provider answering at once; streams of {args.deltas} deltas, "
        f"first after {args.first_ms:.0f} ms then every {args.gap_ms:.0f} ms; wrk {args.duration} s per step; "
        f"stream users arrive at 400/s and keep streaming for {args.stream_seconds:.0f} s; gateway store "
        f"{args.store}; medians of {args.rounds} round(s), (min–max) where they differ.",
        "",
        "| target | c | req/s | p50 ms | p99 ms | added p50 / p99 ms | CPU ms/req | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def baseline(r: dict) -> dict | None:
        """What a target's added latency is measured against: the same call made directly."""
        if r["name"].startswith("direct"):
            return None
        return by_name.get("direct-chat" if r["name"].endswith("emulated") else "direct")

    for r in results:
        direct = baseline(r)
        for c, s in r["nonstream"].items():
            d = direct["nonstream"].get(c) if direct else None
            added = f"+{s['p50'] - d['p50']:.2f} / +{s['p99'] - d['p99']:.2f}" if d else "-"
            cpu = _spread(s, "cpu_ms_per_request") if "cpu_ms_per_request" in s else "-"
            fails = s["failed"] + (1 if s["socket_errors"] else 0)
            lines.append(
                f"| {r['name']} | {c} | {_spread(s, 'rps', '{:.0f}')} | {_spread(s, 'p50')} | {_spread(s, 'p99')} "
                f"| {added} | {cpu} | {fails} |"
            )
    lines += [
        "",
        "| target | users | streams OK / run | peak open | first byte p50 ms | first delta p50 / p99 ms "
        "| added first delta p50 ms | CPU ms/stream |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        direct = baseline(r)
        for n, s in r["streams"].items():
            d = direct["streams"].get(n) if direct else None

            def f(v: float | None) -> str:
                return "-" if v is None else f"{v:.1f}"

            added = f"+{s['ttft_p50'] - d['ttft_p50']:.1f}" if d and s["ttft_p50"] and d["ttft_p50"] else "-"
            cpu = _spread(s, "cpu_ms_per_stream") if "cpu_ms_per_stream" in s else "-"
            lines.append(
                f"| {r['name']} | {n} | {s['ok']} / {s['count']} | {s['peak_open']} | {f(s['ttfb_p50'])} | "
                f"{f(s['ttft_p50'])} / {f(s['ttft_p99'])} | {added} | {cpu} |"
            )
    lines += ["", "| target | processes | RSS per process after the run, MB |", "|---|---|---|"]
    for r in results:
        if "rss_after_mb" in r:
            values = list(r["rss_after_mb"].values())
            lines.append(f"| {r['name']} | {len(values)} | {', '.join(f'{v:.0f}' for v in values)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default="", help="comma-separated: portkey, litellm")
    parser.add_argument("--emulated", action="store_true", help="also measure the Chat Completions emulation")
    parser.add_argument(
        "--console", action="store_true", help="also measure this tree with an admin key set (the console served)"
    )
    parser.add_argument(
        "--limits", action="store_true", help="also measure this tree with a gateway key that has limits (none hit)"
    )
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--streams", default="100,500,1000")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk step")
    parser.add_argument("--stream-seconds", type=float, default=6, help="seconds each stream user keeps going")
    parser.add_argument("--workers", type=int, default=0, help="gunicorn workers (0: gunicorn.conf.py's default)")
    parser.add_argument("--deltas", type=int, default=20)
    parser.add_argument("--first-ms", type=float, default=100)
    parser.add_argument("--gap-ms", type=float, default=100)
    parser.add_argument("--rounds", type=int, default=1, help="rounds, targets interleaved; medians reported")
    parser.add_argument("--against", default="", help="another commit (any git rev) measured as one more target")
    parser.add_argument("--store", choices=("on", "off"), default="on", help="the gateway's store for each request")
    parser.add_argument("--out", default=f"/tmp/gateway-bench-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.streams = [int(n) for n in args.streams.split(",") if n]
    # A thousand streams take three thousand descriptors across client, gateway and fake provider.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    targets = [("direct", lambda: direct(False)), ("gateway", lambda: gateway(False, args.workers))]
    if args.against:
        src, python = _against(args.against)
        label = f"gateway@{args.against}"
        targets.append((label, lambda: gateway(False, args.workers, src, python)))
    if args.limits:
        targets.append(("gateway+limits", lambda: gateway(False, args.workers, limited=True)))
    if args.console:
        targets.append(("gateway+console", lambda: gateway(False, args.workers, console=True)))
    if args.emulated:
        targets += [("direct-chat", lambda: direct(True)), ("gateway-emulated", lambda: gateway(True, args.workers))]
        if args.against:
            targets.append((f"{label}-emulated", lambda: gateway(True, args.workers, src, python)))
    known = {"portkey": portkey, "litellm": litellm}
    for peer in filter(None, args.peers.split(",")):
        if peer not in known:
            raise SystemExit(f"unknown peer {peer!r}: {', '.join(known)}")
        targets.append((peer, known[peer]))

    fake = fake_upstream(args.deltas, args.first_ms, args.gap_ms)
    rounds: list[list[dict]] = []
    try:
        # Targets take turns within each round, so that drift in the machine (other load, thermal, page
        # cache) lands on all of them alike rather than on whichever ran last.
        for n in range(args.rounds):
            results = []
            for name, start in targets:
                print(f"round {n + 1}, {name}:", file=sys.stderr, flush=True)
                with start() as target:
                    results.append(measure(name, target, args))
            rounds.append(results)
    finally:
        fake.stop()
    results = median_of(rounds)
    text = report(results, args)
    os.makedirs(args.out, exist_ok=True)
    Path(args.out, "rounds.json").write_text(json.dumps(rounds, indent=1))
    Path(args.out, "results.json").write_text(json.dumps(results, indent=1))
    Path(args.out, "report.md").write_text(text + "\n")
    print(text)
    print(f"\n(results in {args.out})", file=sys.stderr)


if __name__ == "__main__":
    main()

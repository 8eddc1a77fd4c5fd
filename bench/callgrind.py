#!/usr/bin/env python3
"""Instructions per plain request in a gateway worker, counted by callgrind: a figure the machine does not move.

    python bench/callgrind.py [--against REV ...] [--store off|on] [--requests 300] [--warmup 100] [--keep]

Runs this tree's gateway as `gunicorn -c gunicorn.conf.py wsgi:app` does (wsgi.py is ``create_app()``;
gevent, the gateway's gunicorn hooks), with one worker, under valgrind's callgrind with instrumentation off.
bench/fake_upstream.py answers as the OpenAI provider on 127.0.0.1, in processes of its own, so none of its
instructions are counted; this script is the HTTP client, outside valgrind too. After ``--warmup`` requests
(imports done on first use, connection pools, caches), instrumentation is switched on in the worker alone
(``callgrind_control -i on``), ``--requests`` plain non-streaming ``POST /v1/responses`` are sent one after
the other on one keep-alive connection (native pass-through; ``"store": false`` for store off, the field left
out for store on), instrumentation goes off and the worker's counts are dumped. The figure is the worker's
instructions over the measured requests, divided by their number (idle ticks of the worker's loop in that
window, a few thousand instructions, are counted with them).

Why a real HTTP client and a gunicorn worker rather than Flask's test client in this process: a request's
cost on the gateway's side is also gunicorn's reading and writing of it, gevent's sockets and hub, the
gateway's own response write (post_worker_init) and the frozen garbage collector, all of which a WSGI test
client skips, while it adds Werkzeug's test machinery of its own. Counting only the worker leaves the client,
the provider and the gunicorn master out. The earlier figures in the commit log ("in the worker") were taken
this way.

gunicorn's request parser is its pure-Python one (``--http-parser python``) in both revisions: gunicorn_h1c's
SSE4.2 parser uses an instruction valgrind 3.19 cannot run (PCMPESTRI, imm8 0x04), and the worker dies of
SIGILL at the first request. The request is the same for every revision, so the parser adds the same amount
to each figure. PYTHONHASHSEED is fixed so that string hashing, and with it dict and set layouts, is alike
from run to run.

--against REV checks REV out into a temporary git worktree under /tmp, runs the same measurement there with
this venv (PYTHONPATH and working directory the worktree, so its gateway, wsgi.py and gunicorn.conf.py are
the ones loaded), prints both figures and the difference, and removes the worktree. It may be repeated.

Needs valgrind (`apt-get install -y valgrind`). Bounded: fixed request counts, a timeout on every request
and every control command, and a time budget per revision; about 30 s per revision on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, UPSTREAM, UPSTREAM_KEY, Process, fake_upstream

GATEWAY_PORT = 18190  # not compare.py's 18180, so that a gateway left running by it does not answer here
BUDGET_S = 170  # per revision: start, warm-up and measured loop together
REQUEST_TIMEOUT_S = 60  # one request under callgrind takes some 30 ms; a minute means the worker is stuck
MESSAGE = "Say hello in one short sentence."


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _label_of_tree() -> str:
    """HEAD's name, marked when the tree differs from it: a refactor is usually measured before it is committed."""
    head = _git("rev-parse", "--short", "HEAD")
    # bench/ is left out: this script and its outputs do not change what is measured.
    changed = _git("status", "--porcelain", "--", ".", ":!bench")
    return f"HEAD({head})+uncommitted" if changed else f"HEAD({head})"


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """REV checked out (detached) under /tmp, removed afterwards."""
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}")
    where = Path(tempfile.mkdtemp(prefix="gateway-callgrind-wt-"))
    tree = where / sha[:12]
    _git("worktree", "add", "--detach", "--quiet", str(tree), sha)
    try:
        yield tree
    finally:
        # --force: the run leaves .pyc files and a metrics directory behind, which git counts as changes.
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        shutil.rmtree(where, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False)


class Control:
    """callgrind_control for one worker; every command waits for valgrind's answer, within a timeout."""

    def __init__(self, prefix: str, pid: int):
        self.prefix, self.pid = prefix, pid

    def __call__(self, *args: str) -> None:
        out = subprocess.run(
            ["callgrind_control", f"--vgdb-prefix={self.prefix}", *args, str(self.pid)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode or "OK." not in out.stdout:
            raise SystemExit(f"callgrind_control {' '.join(args)} {self.pid} failed: {out.stdout}{out.stderr}")


def _callgrind_pids(prefix: str) -> set[int]:
    out = subprocess.run(
        ["callgrind_control", f"--vgdb-prefix={prefix}"], capture_output=True, text=True, timeout=60
    ).stdout
    return {int(p) for p in re.findall(r"^PID (\d+):", out, re.M)}


def _worker(prefix: str, master: int, deadline: float) -> int:
    """The worker's pid: the one callgrind process that is not the master (it forks a moment after it listens)."""
    while time.monotonic() < deadline:
        others = _callgrind_pids(prefix) - {master}
        if len(others) == 1:
            return others.pop()
        if len(others) > 1:
            raise SystemExit(f"several gunicorn workers under callgrind ({sorted(others)}); expected one")
        time.sleep(0.5)
    raise SystemExit("the gunicorn worker did not show up under callgrind")


def _requests(conn: http.client.HTTPConnection, body: bytes, headers: dict, count: int, deadline: float) -> None:
    for n in range(count):
        if time.monotonic() > deadline:
            raise SystemExit(f"out of time after {n} of {count} requests")
        conn.request("POST", "/v1/responses", body, headers)
        resp = conn.getresponse()
        data = resp.read()
        # A failed request is cheaper than a relayed one and would pull the figure down unseen.
        if resp.status != 200 or orjson.loads(data).get("status") != "completed":
            raise SystemExit(f"request {n + 1}: HTTP {resp.status}: {data[:300]!r}")


def measure(tree: Path, args: argparse.Namespace) -> float:
    """Instructions per request in the worker of the gateway at ``tree``."""
    deadline = time.monotonic() + BUDGET_S
    work = Path(tempfile.mkdtemp(prefix="gateway-callgrind-"))
    prefix = str(work / "vgdb")
    env = {
        "GATEWAY_BIND": f"127.0.0.1:{GATEWAY_PORT}",
        "GATEWAY_WORKERS": "1",
        "GATEWAY_BACKGROUND_CONSUMERS": "0",
        "GATEWAY_CONTROL_SOCKET": "off",
        "GATEWAY_PROVIDERS__OPENAI__BASE_URL": UPSTREAM,
        "GATEWAY_STORE_URL": f"sqlite:///{work}/gateway.sqlite3",
        # Ahead of the venv's editable install of /work/main, which would otherwise win for another revision.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
        "PYTHONHASHSEED": "0",
    }
    found = subprocess.run(
        [sys.executable, "-c", "import gateway; print(gateway.__file__)"],
        env={**os.environ, **env},
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    if not found.startswith(str(tree) + os.sep):
        raise SystemExit(f"gateway would be imported from {found or '(nowhere)'}, not from {tree}")
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        # The worker is forked, not exec'd: only with trace-children does valgrind open its control channel in
        # the child at the fork. Programs exec'd later (the store check when_ready starts) are left uncounted.
        "--trace-children=yes",
        "--trace-children-skip=*",
        f"--vgdb-prefix={prefix}",
        f"--callgrind-out-file={work}/callgrind.out.%p",
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "--http-parser",
        "python",
        "wsgi:app",
    ]
    gateway = Process("gateway-callgrind", cmd, f"http://127.0.0.1:{GATEWAY_PORT}/healthz", env=env, cwd=tree)
    try:
        control = Control(prefix, _worker(prefix, gateway.proc.pid, deadline))
        body = {"model": "gpt-4o-mini", "input": MESSAGE}
        if args.store == "off":
            body["store"] = False
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {UPSTREAM_KEY}",
            "x-portkey-provider": "openai",
        }
        conn = http.client.HTTPConnection("127.0.0.1", GATEWAY_PORT, timeout=REQUEST_TIMEOUT_S)
        payload = orjson.dumps(body)
        _requests(conn, payload, headers, args.warmup, deadline)
        # Zeroed first so that the dump holds the measured requests only, whatever was counted before.
        control("--zero")
        control("--instr=on")
        _requests(conn, payload, headers, args.requests, deadline)
        control("--instr=off")
        control("--dump=measured")
        conn.close()
        candidates = glob.glob(f"{work}/callgrind.out.{control.pid}.*")
        dumps = [d for d in candidates if "Trigger: dump measured" in Path(d).read_text()]
        if len(dumps) != 1:
            raise SystemExit(f"expected one dump of the measured requests in {work}, found {len(dumps)}")
        totals = re.search(r"^totals: (\d+)", Path(dumps[0]).read_text(), re.M)
        if not totals:
            raise SystemExit(f"no totals line in {dumps[0]}")
        if args.keep:
            print(f"  (callgrind dump: {dumps[0]})", file=sys.stderr)
        return int(totals.group(1)) / args.requests
    finally:
        gateway.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", action="append", default=[], help="another git revision to measure too")
    parser.add_argument("--base", default="", help="a git revision measured first instead of the tree as it is")
    parser.add_argument("--store", choices=("on", "off"), default="off", help="the gateway's store for each request")
    parser.add_argument("--requests", type=int, default=300, help="requests measured")
    parser.add_argument("--warmup", type=int, default=100, help="requests before instrumentation is on")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind dumps (for callgrind_annotate)")
    args = parser.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        raise SystemExit("valgrind is missing: apt-get install -y valgrind")
    if not 0 < args.requests <= 2000 or not 0 <= args.warmup <= 2000:
        raise SystemExit("--requests from 1 to 2000, --warmup from 0 to 2000: a revision has a time budget")

    results: list[tuple[str, float]] = []
    fake = fake_upstream(20, 100, 100)  # stream settings; these requests are not streamed
    try:
        if not args.base:
            label = _label_of_tree()
            print(f"{label}: measuring…", file=sys.stderr, flush=True)
            results.append((label, measure(ROOT, args)))
        for rev in filter(None, [args.base, *args.against]):
            with worktree(rev) as tree:
                print(f"{rev}: measuring…", file=sys.stderr, flush=True)
                results.append((rev, measure(tree, args)))
    finally:
        fake.stop()

    print(
        f"callgrind, instructions per plain POST /v1/responses in the gunicorn worker, store {args.store}, "
        f"{args.warmup} warm-up requests:"
    )
    width = max(len(label) for label, _ in results)
    for label, per_request in results:
        print(f"{label:<{width}}  {per_request / 1e6:.3f} M  ({args.requests})")
    here_label, here = results[0]
    for label, per_request in results[1:]:
        print(f"difference: {here_label} against {label}: {(here - per_request) / per_request * 100:+.2f} %")


if __name__ == "__main__":
    main()

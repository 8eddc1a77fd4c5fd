#!/usr/bin/env python3
"""Instructions per plain request in a gateway worker, counted by callgrind: a figure the machine does not move.

    python bench/callgrind.py [--against REV ...] [--base REV] [--store off|on] [--requests 300] [--warmup 100]
                              [--keep]

Runs the gateway as `gunicorn -c gunicorn.conf.py wsgi:app` does (wsgi.py is ``create_app()``; gevent, the
gateway's gunicorn hooks), one worker, under valgrind's callgrind with instrumentation off. The fake provider of
../shared/bench/fake_upstream.py answers on 127.0.0.1 in a process of its own and this script is the HTTP client,
so neither is counted. After ``--warmup`` requests (imports done on first use, connection pools, caches),
instrumentation is switched on in the worker alone (``callgrind_control -i on``), ``--requests`` plain
non-streaming ``POST /v1/responses`` go one after the other on one keep-alive connection (native pass-through;
``"store": false`` for store off, the field left out for store on), instrumentation goes off and the worker's
counts are dumped. The figure is those instructions divided by the number of requests.

Why a real HTTP client and a gunicorn worker rather than Flask's test client in this process: a request's cost on
the gateway's side includes gunicorn's reading and writing of it, gevent's sockets and hub, the gateway's own
response write (post_worker_init) and its frozen garbage collector, which a WSGI test client skips while adding
Werkzeug's test machinery of its own. Counting the worker alone leaves out the client, the provider and the
gunicorn master; the README's earlier callgrind figures were counted in the worker too.

Why the waits: a socket read that finds its data already there takes a shorter path through gevent than one that
has to wait, and which of the two happens depended on timing, which moved the figure by up to 0.8 % between runs
of one commit. So the provider answers after UPSTREAM_DELAY_MS and the client sends the next request only once
the worker is asleep waiting for it: every read of a request and of a provider's answer waits, as with a real
provider and a real client, and runs of one commit agree to 0.01 %. Neither wait is counted: the worker is idle.

gunicorn's request parser is its pure-Python one (``--http-parser python``) for every revision: gunicorn_h1c's
SSE4.2 parser uses an instruction valgrind 3.19 cannot run (PCMPESTRI, imm8 0x04), and the worker dies of SIGILL
at its first request. The request is the same for every revision, so the parser adds the same to each figure.
PYTHONHASHSEED is fixed so that string hashes, and with them dict and set layouts, are alike from run to run.

A figure depends on the provider's answer, the waits and the parser, so compare revisions within one run (that is
what --against is for), not with figures taken another way: d799c90, "2.984 M" in its commit message, is 3.244 M
here, store off.

The tree as it is (uncommitted changes too) is measured first, or ``--base REV``. ``--against REV`` checks REV out
into a temporary git worktree under /tmp, measures it with this venv (PYTHONPATH and working directory the
worktree, so its gateway, wsgi.py and gunicorn.conf.py are the ones loaded), and removes the worktree; it may be
repeated. Each figure is printed with the difference of the first against it.

Needs valgrind (`apt-get install -y valgrind`). The fake provider needs httptools: like ../shared/bench/run.sh,
this makes a venv for it at $BENCH_VENV (default /tmp/bench-venv) if there is none. Bounded: fixed request counts,
a timeout on every request and every control command, and a time budget per revision; about 40 s a revision.
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
from compare import ROOT, UPSTREAM_KEY, Process

SHARED_BENCH = ROOT.parent / "shared" / "bench"
BENCH_VENV = Path(os.environ.get("BENCH_VENV", "/tmp/bench-venv"))  # run.sh's, so that either makes it for both
UPSTREAM_PORT = 18110  # neither compare.py's fake (18100) nor shared/bench's default (18000)
GATEWAY_PORT = 18190  # not compare.py's 18180, so that a gateway it left running does not answer here
# Longer than the worker takes, under callgrind, from sending the provider's request to reading its answer, with
# room for a busy machine; the answer then always finds the worker waiting for it.
UPSTREAM_DELAY_MS = 20
PAUSE_S = 0.02  # before looking whether the worker sleeps: it is busy for some ms after the response anyway
BUDGET_S = 170  # per revision: start, warm-up and measured requests together
REQUEST_TIMEOUT_S = 60  # a request under callgrind takes some 40 ms; a minute means the worker is stuck
MESSAGE = "Say hello in one short sentence."


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _label_of_tree() -> str:
    """HEAD's name, marked when the tree differs from it: a refactor is usually measured before it is committed."""
    head = _git("rev-parse", "--short", "HEAD")
    # bench/ is left out: this script and its outputs do not change what is measured.
    changed = _git("status", "--porcelain", "--", ".", ":!bench")
    return f"HEAD({head})+uncommitted" if changed else f"HEAD({head})"


def _commit(rev: str) -> str:
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"{rev}: not a commit of this repository") from None


@contextlib.contextmanager
def worktree(sha: str) -> Iterator[Path]:
    """The commit checked out (detached) under /tmp, removed afterwards."""
    where = Path(tempfile.mkdtemp(prefix="gateway-callgrind-wt-"))
    tree = where / sha[:12]
    _git("worktree", "add", "--detach", "--quiet", str(tree), sha)
    try:
        yield tree
    finally:
        # --force: the run leaves .pyc files behind, which git counts as changes.
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        shutil.rmtree(where, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False)


@contextlib.contextmanager
def fake_provider() -> Iterator[str]:
    """shared/bench's fake provider, answering every non-streaming request after UPSTREAM_DELAY_MS; yields its URL."""
    script = SHARED_BENCH / "fake_upstream.py"
    if not script.exists():
        raise SystemExit(f"{script} is missing: the shared benchmark folder sits beside the repository")
    python = BENCH_VENV / "bin" / "python"
    usable = (
        python.exists() and not subprocess.run([str(python), "-c", "import httptools"], capture_output=True).returncode
    )
    if not usable:
        print(f"making {BENCH_VENV} for the fake provider…", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        requirements = str(SHARED_BENCH / "requirements.txt")
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", requirements], check=True, timeout=300)
    store = tempfile.mkdtemp(prefix="gateway-callgrind-provider-")
    cmd = [str(python), str(script), "--port", str(UPSTREAM_PORT), "--workers", "1"]
    cmd += ["--delay-ms", str(UPSTREAM_DELAY_MS), "--store-dir", store]
    proc = Process("fake-provider", cmd, f"http://127.0.0.1:{UPSTREAM_PORT}/health")
    try:
        yield f"http://127.0.0.1:{UPSTREAM_PORT}/v1"
    finally:
        proc.stop()
        shutil.rmtree(store, ignore_errors=True)


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


def _worker(prefix: str, master: int, deadline: float) -> int:
    """The worker's pid: the one callgrind process that is not the master (it forks a moment after it listens)."""
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["callgrind_control", f"--vgdb-prefix={prefix}"], capture_output=True, text=True, timeout=60
        ).stdout
        others = {int(p) for p in re.findall(r"^PID (\d+):", out, re.M)} - {master}
        if len(others) == 1:
            return others.pop()
        if len(others) > 1:
            raise SystemExit(f"several gunicorn workers under callgrind ({sorted(others)}); expected one")
        time.sleep(0.5)
    raise SystemExit("the gunicorn worker did not show up under callgrind")


def _busy(pid: int) -> bool:
    """Whether any thread of the process is other than asleep (waiting for the big lock of valgrind is asleep)."""
    for task in glob.glob(f"/proc/{pid}/task/*/stat"):
        with contextlib.suppress(OSError), open(task) as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] != "S":
                return True
    return False


def _wait_idle(pid: int, deadline: float) -> None:
    """Returns once the worker is idle twice in a row, 2 ms apart: it also blocks for a moment in a write."""
    time.sleep(PAUSE_S)
    while time.monotonic() < deadline:
        if not _busy(pid):
            time.sleep(0.002)
            if not _busy(pid):
                return
        time.sleep(0.002)
    raise SystemExit("the worker never went idle")


def _requests(
    conn: http.client.HTTPConnection, body: bytes, headers: dict, count: int, worker: int, deadline: float
) -> None:
    for n in range(count):
        if time.monotonic() > deadline:
            raise SystemExit(f"out of time after {n} of {count} requests")
        _wait_idle(worker, deadline)
        conn.request("POST", "/v1/responses", body, headers)
        resp = conn.getresponse()
        data = resp.read()
        # A failed request is cheaper than a relayed one and would pull the figure down unseen.
        if resp.status != 200 or orjson.loads(data).get("status") != "completed":
            raise SystemExit(f"request {n + 1}: HTTP {resp.status}: {data[:300]!r}")


def measure(tree: Path, upstream: str, args: argparse.Namespace) -> float:
    """Instructions per request in the worker of the gateway at ``tree``."""
    deadline = time.monotonic() + BUDGET_S
    work = Path(tempfile.mkdtemp(prefix="gateway-callgrind-"))
    prefix = str(work / "vgdb")
    env = {
        "GATEWAY_BIND": f"127.0.0.1:{GATEWAY_PORT}",
        "GATEWAY_WORKERS": "1",
        "GATEWAY_BACKGROUND_CONSUMERS": "0",
        "GATEWAY_CONTROL_SOCKET": "off",
        "GATEWAY_PROVIDERS__OPENAI__BASE_URL": upstream,
        "GATEWAY_PROVIDERS__BENCHCHAT__BASE_URL": upstream,
        "GATEWAY_PROVIDERS__BENCHCHAT__API": "chat",
        "GATEWAY_STORE_URL": f"sqlite:///{work}/gateway.sqlite3",
        # Ahead of the venv's editable install of this tree, which would otherwise win for another revision.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")])),
        "PYTHONHASHSEED": "0",
    }
    if args.console:  # an admin key: the operator's console is served beside the API
        env["GATEWAY_ADMIN_KEY"] = "sha256:" + "0" * 64
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
        # The worker is forked, not exec'd: only with trace-children does valgrind open its control channel in the
        # child at the fork. Programs exec'd later (the store check that when_ready starts) are left to run bare.
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
        body: dict = {"model": "gpt-4o-mini", "input": MESSAGE}
        if args.store == "off":
            body["store"] = False
        if args.tools:
            body["tools"] = [_function(n) for n in range(args.tools)]
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {UPSTREAM_KEY}",
            "x-portkey-provider": "openai" if args.provider == "native" else "benchchat",
        }
        conn = http.client.HTTPConnection("127.0.0.1", GATEWAY_PORT, timeout=REQUEST_TIMEOUT_S)
        payload = orjson.dumps(body)
        try:
            _requests(conn, payload, headers, args.warmup, control.pid, deadline)
            control("--zero")  # so that the dump holds the measured requests only, whatever came before
            control("--instr=on")
            _requests(conn, payload, headers, args.requests, control.pid, deadline)
            control("--instr=off")
            control("--dump=measured")
        except (OSError, http.client.HTTPException) as exc:
            raise SystemExit(f"the gateway stopped answering ({exc!r}); its log: {gateway.log.name}") from None
        finally:
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


def _function(n: int) -> dict:
    """A function tool as agents send them: a description and a small JSON schema."""
    return {
        "type": "function",
        "name": f"tool_{n}",
        "description": f"Tool number {n}: looks something up and answers in one line.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", action="append", default=[], help="another git revision to measure too")
    parser.add_argument("--base", default="", help="a git revision measured first instead of the tree as it is")
    parser.add_argument("--store", choices=("on", "off"), default="off", help="the gateway's store for each request")
    parser.add_argument(
        "--provider", choices=("native", "emulated"), default="native", help="pass-through, or over Chat Completions"
    )
    parser.add_argument("--tools", type=int, default=0, help="function tools in each request")
    parser.add_argument("--console", action="store_true", help="with an admin key set, so the console served")
    parser.add_argument("--requests", type=int, default=300, help="requests measured")
    parser.add_argument("--warmup", type=int, default=100, help="requests before instrumentation is on")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind dumps (for callgrind_annotate)")
    args = parser.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        raise SystemExit("valgrind is missing: apt-get install -y valgrind")
    if args.requests < 1 or args.warmup < 0 or args.requests + args.warmup > 1000:
        raise SystemExit(
            f"--requests 1 or more, --warmup and --requests together 1,000 at most ({BUDGET_S} s a revision)"
        )

    # Resolved once, at the start: HEAD may move while the run goes on.
    revs = [(rev, _commit(rev)) for rev in filter(None, [args.base, *args.against])]
    results: list[tuple[str, float]] = []
    with fake_provider() as upstream:
        if not args.base:
            label = _label_of_tree()
            print(f"{label}: measuring…", file=sys.stderr, flush=True)
            results.append((label, measure(ROOT, upstream, args)))
        for rev, sha in revs:
            label = rev if sha.startswith(rev) else f"{rev}({sha[:7]})"
            with worktree(sha) as tree:
                print(f"{label}: measuring…", file=sys.stderr, flush=True)
                results.append((label, measure(tree, upstream, args)))

    print(
        f"callgrind, instructions per POST /v1/responses in the gunicorn worker, {args.provider} provider, "
        f"{args.tools} function tools, store {args.store}, after {args.warmup} warm-up requests:"
    )
    width = max(len(label) for label, _ in results)
    for label, per_request in results:
        print(f"{label:<{width}}  {per_request / 1e6:.3f} M  ({args.requests})")
    first_label, first = results[0]
    for label, per_request in results[1:]:
        print(f"difference: {first_label} against {label}: {(first - per_request) / per_request * 100:+.2f} %")


if __name__ == "__main__":
    main()

"""The README's quickstart, run as written against the gateway started as it says, with the mock provider.

The blocks are taken from README.md verbatim. Two things differ from a reader's terminal: the install line
is not run (the suite runs in the venv it made), and the gateway listens on a free port rather than 8787
(the URLs are rewritten to match), so that a gateway already running on the machine does not interfere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

README = ROOT / "README.md"


def quickstart_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quickstart") : text.index("### With a real provider")]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


@pytest.fixture
def started(tmp_path):
    """The first block's start lines, run in a fresh directory that has the suite's .venv; yields (port, env)."""
    blocks = quickstart_blocks()
    install, *start = blocks[0].splitlines()
    assert install == "python3 -m venv .venv && .venv/bin/pip install -e . openai"
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_", "PROMETHEUS_"))}
    env["GATEWAY_BIND"] = f"127.0.0.1:{port}"
    env["GATEWAY_WORKERS"] = "2"
    script = "\n".join(_here(line, port) for line in start[:1]) + "\necho $! > serve.pid\n"
    script += "\n".join(_here(line, port) for line in start[1:]) + "\n"
    # Files, not pipes: the gateway left running in the background would hold a pipe open.
    out = tmp_path / "start.out"
    try:
        with out.open("w") as fh:
            ran = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, stdout=fh, stderr=fh, timeout=60)
        assert ran.returncode == 0, out.read_text() + (tmp_path / "gateway.log").read_text()
        assert '"status":"ready"' in out.read_text().replace(" ", "")
        yield port, env, tmp_path
    finally:
        pid = int((tmp_path / "serve.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


def _here(block: str, port: int) -> str:
    return block.replace("127.0.0.1:8787", f"127.0.0.1:{port}")


@pytest.mark.slow
def test_the_quickstart_works_as_written(started):
    port, env, cwd = started
    blocks = quickstart_blocks()[1:]
    outputs = []
    for block in blocks:
        ran = subprocess.run(
            ["bash", "-e", "-c", _here(block, port)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, f"{block}\n{ran.stdout}\n{ran.stderr}"
        outputs.append(ran.stdout)
    create, stream, sdk = outputs
    assert '"text":"Echo 1: Say hello."' in create.replace('": "', '":"')
    assert "event: response.completed" in stream and "response.output_text.delta" in stream
    # The printed lines the README promises, in order.
    assert sdk.splitlines() == ["Echo 1: Tell a short story.", "Echo 3: Add one.", "Echo 1: Pick a number."]
    text = README.read_text()
    for promised in ("`Echo 1: Tell a short story.`", "`Echo 3: Add one.`", "`Echo 1: Pick a number.`"):
        assert promised in text
    assert "Traceback" not in (cwd / "gateway.log").read_text()


def test_the_readme_start_commands_are_the_ones_tested():
    text = README.read_text()
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/gateway serve\n" in text
    assert "```sh\nbash tests/run\n```" in text
    assert "exec bash tests/run\n" in Path(ROOT / ".ci" / "run").read_text()

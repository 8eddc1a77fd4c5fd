"""The real Codex CLI (``@openai/codex``, pinned in tests/node_client's lockfile) through the gateway, with its
default configuration but for the provider: on an emulated provider and on a native one, both the scripted
model of ``tests/scripted_model.py``, which runs the shell command or writes the patch the prompt names.

Codex sends ``store: false`` and its whole history every turn, its tools as functions, a namespace
(``multi_agent_v1``), a hosted ``web_search``, and for gpt-5.x model names a freeform ``apply_patch`` and a
client-run ``tool_search``: the emulated provider must take every one of them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.scripted_model import MODEL

CODEX = Path(__file__).parent / "node_client" / "node_modules" / ".bin" / "codex"
pytestmark = [pytest.mark.node, pytest.mark.slow]


class Codex:
    """``codex exec`` in a directory of its own, with a CODEX_HOME whose config.toml is the README's."""

    def __init__(self, root: Path, gateway_url: str, provider: str):
        self.home, self.work = root / "home", root / "work"
        self.home.mkdir()
        self.work.mkdir()
        (self.home / "config.toml").write_text(
            f'model = "{MODEL}"\n'
            'model_provider = "gateway"\n\n'
            "[model_providers.gateway]\n"
            'name = "AI gateway"\n'
            f'base_url = "{gateway_url}/v1"\n'
            'wire_api = "responses"\n'
            'env_key = "GATEWAY_API_KEY"\n'
            f'http_headers = {{ "x-portkey-provider" = "{provider}" }}\n'
        )

    def run(self, *args: str) -> str:
        """Runs ``codex exec ARGS``; returns its last message, asserting the turn completed."""
        last = self.home / "last-message.txt"
        last.unlink(missing_ok=True)
        env = {**os.environ, "CODEX_HOME": str(self.home), "GATEWAY_API_KEY": "sk-codex-test"}
        done = subprocess.run(
            [str(CODEX), "exec", "--skip-git-repo-check", "--output-last-message", str(last), *args],
            cwd=self.work,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return last.read_text()


@pytest.mark.parametrize("provider", ["scriptchat", "scriptnative"], ids=["emulated", "native"])
def test_codex_runs_a_command_and_resumes_the_session(scripted_gateway, scripted, provider, tmp_path):
    codex = Codex(tmp_path, scripted_gateway.url, provider)
    first = codex.run("please run `echo $((6*7))`")
    assert "Answer to 'please run `echo $((6*7))`'" in first and "42" in first  # the command's output came back

    # A second turn of the same session: Codex sends the first turn's items (store: false) with the new text.
    second = codex.run("resume", "--last", "now run `echo second-$((5+5))`")
    assert "second-10" in second

    if provider == "scriptchat":
        [*_, last] = scripted.bodies("/v1/chat/completions")
        names = [t["function"]["name"] for t in last["tools"]]
        assert "exec_command" in names and any(n.startswith("multi_agent_v1__") for n in names)
        assert "web_search" not in names and "client_metadata" not in last
        # The first turn's question, call and output came back as history before the second question.
        roles = [m["role"] for m in last["messages"]]
        assert roles.count("tool") == 2 and roles[-1] == "tool"


@pytest.mark.parametrize("provider", ["scriptchat", "scriptnative"], ids=["emulated", "native"])
def test_codex_with_a_gpt5_model_name_writes_a_file_with_its_apply_patch(
    scripted_gateway, scripted, provider, tmp_path
):
    codex = Codex(tmp_path, scripted_gateway.url, provider)
    said = codex.run("-m", "gpt-5.5", "--sandbox", "workspace-write", "please write `hello from codex` to `notes.txt`")
    assert "Success" in said
    assert (codex.work / "notes.txt").read_text() == "hello from codex\n"
    [*_, last] = scripted.bodies("/v1/chat/completions") or [None]
    # The session goes on: a shell command in a second turn reads the file the first one wrote.
    assert "hello from codex" in codex.run("-m", "gpt-5.5", "resume", "--last", "now run `cat notes.txt`")
    if provider == "scriptchat":
        tools = {t["function"]["name"]: t["function"] for t in last["tools"]}
        assert tools["apply_patch"]["parameters"]["required"] == ["input"]  # the freeform tool, as one string
        assert "tool_search" in tools  # Codex's client-run tool search, as a function

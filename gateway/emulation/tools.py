"""Tools the client runs itself (local_shell, shell, apply_patch, client tool_search) as Chat Completions
functions, and their calls and outputs as the Responses items openai-python's types describe.

A chat model sees each as a function whose arguments are the fields of the call item's action (or
operation), so a call maps onto its item field for field and back again for history.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_STRINGS = {"type": "array", "items": {"type": "string"}}


@dataclass(frozen=True)
class ClientTool:
    type: str  # the tool's type, and its function's name
    call: str  # the call item's type
    output: str  # the output item's type
    description: str
    parameters: dict
    to_item: Callable[[dict], dict]  # arguments -> the call item's fields (beside id, call_id, status)
    to_arguments: Callable[[dict], dict]  # a call item -> the function's arguments
    output_text: Callable[[dict], str]  # an output item -> the tool message's text


def _local_shell_item(args: dict) -> dict:
    command = args.get("command")
    env = args.get("env") if isinstance(args.get("env"), dict) else {}
    action = {
        "type": "exec",
        "command": [str(c) for c in command] if isinstance(command, list) else [str(command or "")],
        "env": {str(k): str(v) for k, v in env.items()},
    }
    for key in ("timeout_ms", "working_directory", "user"):
        if args.get(key) is not None:
            action[key] = args[key]
    return {"action": action}


def _shell_item(args: dict) -> dict:
    commands = args.get("commands")
    if isinstance(commands, str):
        commands = [commands]
    action = {"commands": [str(c) for c in commands or []]}
    for key in ("timeout_ms", "max_output_length"):
        action[key] = args.get(key) if isinstance(args.get(key), int) else None
    return {"action": action}


def _patch_item(args: dict) -> dict:
    kind = args.get("type") if args.get("type") in ("create_file", "update_file", "delete_file") else "update_file"
    operation = {"type": kind, "path": str(args.get("path") or "")}
    if kind != "delete_file":
        operation["diff"] = str(args.get("diff") or "")
    return {"operation": operation}


def _search_item(args: dict) -> dict:
    return {"arguments": args, "execution": "client"}


def _shell_output(item: dict) -> str:
    """A shell call's captured chunks as one text: stdout, stderr marked, and how each command ended."""
    lines = []
    for chunk in item.get("output") or []:
        if not isinstance(chunk, dict):
            continue
        if chunk.get("stdout"):
            lines.append(str(chunk["stdout"]))
        if chunk.get("stderr"):
            lines.append("[stderr]\n" + str(chunk["stderr"]))
        outcome = chunk.get("outcome") if isinstance(chunk.get("outcome"), dict) else {}
        if outcome.get("type") == "timeout":
            lines.append("[timed out]")
        elif "exit_code" in outcome:
            lines.append(f"[exit code {outcome['exit_code']}]")
    return "\n".join(lines)


def _patch_output(item: dict) -> str:
    status = item.get("status") or "completed"
    return f"{status}: {item['output']}" if item.get("output") else str(status)


def _search_output(item: dict) -> str:
    names = [t.get("name") for t in item.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    return "Loaded tools: " + ", ".join(names) if names else "No tools found."


def _text_output(item: dict) -> str:
    output = item.get("output")
    return output if isinstance(output, str) else json.dumps(output)


def _without(mapping: Any, *keys: str) -> dict:
    return {k: v for k, v in (mapping or {}).items() if k not in keys and v is not None}


CLIENT_TOOLS: dict[str, ClientTool] = {
    t.type: t
    for t in (
        ClientTool(
            "local_shell",
            "local_shell_call",
            "local_shell_call_output",
            'Runs a command on the user\'s machine. `command` is the argv, e.g. ["bash", "-lc", "ls"].',
            {
                "type": "object",
                "properties": {
                    "command": {**_STRINGS, "description": "The program and its arguments."},
                    "working_directory": {"type": "string"},
                    "timeout_ms": {"type": "integer"},
                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "required": ["command"],
            },
            _local_shell_item,
            lambda item: _without(item.get("action"), "type"),
            _text_output,
        ),
        ClientTool(
            "shell",
            "shell_call",
            "shell_call_output",
            "Runs shell commands on the user's machine, one after another, and returns their output.",
            {
                "type": "object",
                "properties": {
                    "commands": {**_STRINGS, "description": "Shell command lines to run in order."},
                    "timeout_ms": {"type": "integer"},
                    "max_output_length": {"type": "integer"},
                },
                "required": ["commands"],
            },
            _shell_item,
            lambda item: _without(item.get("action")),
            _shell_output,
        ),
        ClientTool(
            "apply_patch",
            "apply_patch_call",
            "apply_patch_call_output",
            "Creates, updates or deletes one file. `diff` is the file's new content as a V4A diff: for a new "
            "file every line starts with '+'; for an update, hunks of context and +/- lines. No diff to delete.",
            {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": ["create_file", "update_file", "delete_file"]},
                    "path": {"type": "string"},
                    "diff": {"type": "string"},
                },
                "required": ["type", "path"],
            },
            _patch_item,
            lambda item: _without(item.get("operation")),
            _patch_output,
        ),
        ClientTool(
            "tool_search",
            "tool_search_call",
            "tool_search_output",
            "Searches for more tools by what they do; the tools it finds can be called next.",
            {
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What the tool should do."}},
                "required": ["query"],
            },
            _search_item,
            lambda item: item.get("arguments") if isinstance(item.get("arguments"), dict) else {},
            _search_output,
        ),
    )
}
CALL_TYPES = {t.call: t for t in CLIENT_TOOLS.values()}
OUTPUT_TYPES = {t.output: t for t in CLIENT_TOOLS.values()}


def client_tool(tool: dict) -> ClientTool | None:
    """The client-executed tool this tool definition is, or None (a function, or one the platform runs)."""
    kind = tool.get("type")
    if kind == "local_shell" or kind == "apply_patch":
        return CLIENT_TOOLS[kind]
    if kind == "shell":
        environment = tool.get("environment")
        local = environment is None or (isinstance(environment, dict) and environment.get("type") == "local")
        return CLIENT_TOOLS["shell"] if local else None  # a container is the platform's
    if kind == "tool_search" and tool.get("execution") == "client":
        return CLIENT_TOOLS["tool_search"]
    return None


def function(tool: dict, spec: ClientTool) -> dict:
    """The chat function for a client-executed tool; a client tool_search may bring its own description and schema."""
    parameters = spec.parameters
    description = spec.description
    if spec.type == "tool_search":
        if isinstance(tool.get("parameters"), dict):
            parameters = tool["parameters"]
        description = tool.get("description") or description
    return {"type": "function", "function": {"name": spec.type, "description": description, "parameters": parameters}}


def call_item(item: dict, spec: ClientTool, arguments: str) -> bool:
    """Make ``item`` (a function_call built from the chat call) the client tool's call item, in place. False,
    leaving it a function_call, when the arguments are not a JSON object (cut off by the output limit, or
    the provider's failure): a shell command or a patch is never made up from what is missing.
    """
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        return False
    if not isinstance(args, dict):
        return False
    for key in ("name", "arguments", "namespace"):
        item.pop(key, None)
    item["type"] = spec.call
    item.update(spec.to_item(args))
    if spec.type == "apply_patch" and item.get("status") not in ("in_progress", "completed"):
        item["status"] = "in_progress"  # apply_patch calls have no "incomplete": not known to be whole
    return True


def chat_call(item: dict) -> dict:
    """A client tool's call item in history -> the chat model's tool call."""
    spec = CALL_TYPES[item["type"]]
    return {
        "id": item.get("call_id"),
        "type": "function",
        "function": {"name": spec.type, "arguments": json.dumps(spec.to_arguments(item))},
    }


def output_call_id(item: dict) -> Any:
    # local_shell_call_output names its call by ``id`` (the model's call id); the others by call_id.
    return item.get("call_id") or (item.get("id") if item["type"] == "local_shell_call_output" else None)


def output_text(item: dict) -> str:
    return OUTPUT_TYPES[item["type"]].output_text(item)


def found_tools(*lists: list[dict]) -> list[dict]:
    """Tools a tool search loaded (and tools given by an ``additional_tools`` item), for the model's next call."""
    out: list[dict] = []
    for items in lists:
        for item in items:
            if item.get("type") in _BRINGS_TOOLS:
                out += [t for t in item.get("tools") or [] if isinstance(t, dict)]
    return out


_BRINGS_TOOLS = frozenset({"tool_search_output", "additional_tools"})

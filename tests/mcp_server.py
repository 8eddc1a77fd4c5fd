"""A real MCP server for the tests: the official ``mcp`` SDK's MCPServer, on 127.0.0.1.

    python -m tests.mcp_server PORT [streamable-http|sse]

Tools: ``add`` (fast), ``slow`` (sleeps), ``fail`` (raises), ``big`` (answers megabytes), ``huge`` (50 MB),
``whoami`` (the ``x-tenant`` header the request came with).
"""

from __future__ import annotations

import sys

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("gateway-tests")
HITS = {"list": 0}


@server.tool(description="Add two integers.")
def add(a: int, b: int) -> str:
    return str(a + b)


@server.tool(description="Wait four times some seconds, then say so.")
async def slow(seconds: float) -> str:
    await anyio.sleep(seconds * 4)  # the scripted model asks for 1.5: longer than the tests' mcp_timeout
    return f"slept {seconds * 4}"


@server.tool(description="Always fails.")
def fail(reason: str = "broken") -> str:
    raise ValueError(f"tool failed: {reason}")


@server.tool(description="Answer this many megabytes of text.")
def big(megabytes: int) -> str:
    return "x" * (megabytes * 1024 * 1024)


@server.tool(description="Answer 50 MB of text.")
def huge() -> str:
    return "x" * (50 * 1024 * 1024)


@server.tool(description="Name the header the server was called with.")
def whoami(ctx: Context) -> str:
    request = ctx.request_context.request
    headers = getattr(request, "headers", None) or {}
    return headers.get("x-tenant", "nobody")


def main(argv: list[str]) -> None:
    port = int(argv[0])
    transport = argv[1] if len(argv) > 1 else "streamable-http"
    app = server.sse_app() if transport == "sse" else server.streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(sys.argv[1:])

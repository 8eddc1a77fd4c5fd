#!/usr/bin/env python3
"""A fast fake OpenAI provider for benchmarks: answers at once, so what is measured is the gateway.

    python bench/fake_upstream.py [--port 18100] [--processes 2] [--deltas 20] [--first-ms 100] [--gap-ms 100]

Serves POST /v1/responses (JSON, or SSE with ``stream: true``) and POST /v1/chat/completions (JSON, or
``data:`` chunks ending in ``[DONE]``), with HTTP/1.1 keep-alive. Several processes share the port
(SO_REUSEPORT) so that the fake is never the bottleneck. Standard library only (uvloop when installed).
The test suite's fake (tests/fake_provider.py) covers the whole contract and its failure modes; this one
covers the hot path and is an order of magnitude faster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import time

WORDS = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "the", "gateway", "relays"]
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{os.getpid():x}{next(_ids):012x}"


def _response(body: dict, text: str, status: str = "completed") -> dict:
    return {
        "id": _id("resp"),
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": body.get("model", "gpt-4o-mini"),
        "output": [
            {
                "id": _id("msg"),
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "usage": {"input_tokens": 8, "output_tokens": len(text.split()), "total_tokens": 8 + len(text.split())},
    }


def _chat(body: dict, text: str) -> dict:
    return {
        "id": _id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "gpt-4o-mini"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": len(text.split()), "total_tokens": 8 + len(text.split())},
    }


def _pieces(n: int) -> list[str]:
    return [(" " if i else "") + WORDS[i % len(WORDS)] for i in range(n)]


def _event(payload: dict) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


async def _responses_stream(write, body: dict, args) -> None:
    pieces = _pieces(args.deltas)
    final = _response(body, "".join(pieces))
    start = {**final, "status": "in_progress", "output": [], "usage": None}
    item = final["output"][0]
    seq = itertools.count()

    def ev(kind: str, **fields) -> bytes:
        return _event({"type": kind, "sequence_number": next(seq), **fields})

    write(ev("response.created", response=start) + ev("response.in_progress", response=start))
    write(ev("response.output_item.added", output_index=0, item={**item, "status": "in_progress", "content": []}))
    part = {"type": "output_text", "text": "", "annotations": []}
    write(ev("response.content_part.added", item_id=item["id"], output_index=0, content_index=0, part=part))
    for i, piece in enumerate(pieces):
        await asyncio.sleep((args.first_ms if i == 0 else args.gap_ms) / 1000)
        write(ev("response.output_text.delta", item_id=item["id"], output_index=0, content_index=0, delta=piece))
    text = "".join(pieces)
    write(ev("response.output_text.done", item_id=item["id"], output_index=0, content_index=0, text=text))
    done_part = {**part, "text": text}
    write(ev("response.content_part.done", item_id=item["id"], output_index=0, content_index=0, part=done_part))
    write(ev("response.output_item.done", output_index=0, item=item))
    write(ev("response.completed", response=final))


async def _chat_stream(write, body: dict, args) -> None:
    base = {"id": _id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = body.get("model", "gpt-4o-mini")

    def chunk(delta: dict, finish: str | None = None, **extra) -> bytes:
        payload = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(payload)}\n\n".encode()

    write(chunk({"role": "assistant", "content": ""}))
    for i, piece in enumerate(_pieces(args.deltas)):
        await asyncio.sleep((args.first_ms if i == 0 else args.gap_ms) / 1000)
        write(chunk({"content": piece}))
    write(chunk({}, "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 8, "completion_tokens": args.deltas, "total_tokens": 8 + args.deltas}
        write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
    write(b"data: [DONE]\n\n")


def _head(status: str, content_type: str, length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{framing}\r\nConnection: keep-alive\r\n\r\n".encode()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, args) -> None:
    # Events are small writes: without this, Nagle holds each behind the last one's delayed ACK (40 ms).
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            raw = await reader.readexactly(int(headers.get("content-length", 0)))
            body = json.loads(raw) if raw else {}
            chat = path.endswith("/chat/completions")
            if path.endswith("/health"):
                writer.write(_head("200 OK", "text/plain", 2) + b"ok")
            elif method != "POST" or not (chat or path.endswith("/responses")):
                msg = json.dumps({"error": {"message": "not here", "type": "invalid_request_error"}}).encode()
                writer.write(_head("404 Not Found", "application/json", len(msg)) + msg)
            elif body.get("stream"):
                writer.write(_head("200 OK", "text/event-stream", None))

                def chunked(data: bytes) -> None:
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))

                await (_chat_stream if chat else _responses_stream)(chunked, body, args)
                writer.write(b"0\r\n\r\n")
            else:
                text = "".join(_pieces(args.deltas))
                out = json.dumps(_chat(body, text) if chat else _response(body, text)).encode()
                writer.write(_head("200 OK", "application/json", len(out)) + out)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _run(sock: socket.socket, args) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: _serve(r, w, args), sock=sock, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18100)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--deltas", type=int, default=20, help="text deltas per stream (and words per answer)")
    parser.add_argument("--first-ms", type=float, default=100, help="wait before a stream's first delta")
    parser.add_argument("--gap-ms", type=float, default=100, help="wait between a stream's deltas")
    args = parser.parse_args()
    children = []
    for _ in range(args.processes):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((args.host, args.port))
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _run(sock, args)
            os._exit(0)
        sock.close()
        children.append(pid)
    print(f"fake upstream on http://{args.host}:{args.port}/v1 ({args.processes} processes)", flush=True)

    def stop(*_) -> None:
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


if __name__ == "__main__":
    main()

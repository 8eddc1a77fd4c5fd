"""Server-sent events: an incremental parser that keeps each event's raw bytes, and an encoder."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import orjson

# An event ends at a blank line; providers use LF, CRLF or (rarely) CR line endings.
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\r|\n")

# The events that end a response's stream: after one, nothing more of that response follows.
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


class Event(NamedTuple):
    event: str | None
    data: str
    raw: bytes  # the event exactly as received, blank line included, for byte-faithful pass-through


def parse_block(block: bytes, raw: bytes) -> Event | None:
    """One event block (without its blank line) -> Event; None for a block of comments only."""
    event = None
    data: list[str] = []
    for line in _LINE.split(block):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    if event is None and not data:
        return None
    return Event(event, "\n".join(data), raw)


def iter_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Yield events as soon as their closing blank line arrives, whatever the chunking.

    Bytes after the last blank line are an unfinished event: they are dropped, as SSE clients do.
    """
    buf = b""
    for chunk in chunks:
        if not chunk:
            continue
        buf += chunk
        start = 0
        while True:
            match = _BOUNDARY.search(buf, start)
            if match is None:
                break
            event = parse_block(buf[start : match.start()], buf[start : match.end()])
            start = match.end()
            if event is not None:
                yield event
        buf = buf[start:]


def encode(payload: dict) -> bytes:
    """One Responses API event: `event:` equal to the payload's type, one `data:` line, a blank line."""
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def decode_data(event: Event) -> dict | None:
    """The event's JSON payload, or None when it is not a JSON object."""
    try:
        value = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None

"""Server-sent events: an incremental parser that keeps each event's raw bytes, and an encoder."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import orjson

# An event ends at a blank line; providers use LF, CRLF or (rarely) CR line endings.
_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\r|\n")

# The events that end a response's stream: after one, nothing more of that response follows.
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed", "error"})


class Event:
    """One event as a value: its name, its bytes (as received, blank line included, for byte-faithful
    pass-through; or as the gateway encoded it), and its JSON payload, decoded at most once.

    Every stream a stage hands a door is made of these: the HTTP door writes ``raw``, the WebSocket door
    and the background consumer read ``json()``; nobody parses what the gateway just encoded.
    """

    __slots__ = ("_data", "_payload", "event", "raw")

    def __init__(self, event: str | None, data: str | None, raw: bytes, payload: dict | None = None):
        self.event = event
        self.raw = raw
        self._data = data
        self._payload = payload

    @classmethod
    def of(cls, payload: dict) -> Event:
        """The gateway's own event: ``event:`` equal to the payload's type, one ``data:`` line."""
        kind = payload["type"]
        raw = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"
        return cls(kind, None, raw, payload)

    @property
    def data(self) -> str:
        """The ``data:`` lines, joined."""
        if self._data is None:
            self._data = orjson.dumps(self._payload).decode()
        return self._data

    def json(self) -> dict | None:
        """The payload, or None when the data is not a JSON object (decoded once, then kept)."""
        payload = self._payload
        if payload is None and self._data is not None:
            try:
                value = orjson.loads(self._data)
            except orjson.JSONDecodeError:
                value = None
            payload = self._payload = value if isinstance(value, dict) else _NOT_AN_OBJECT
        return None if payload is _NOT_AN_OBJECT else payload


# An event whose data was decoded and is not a JSON object (not decoded again).
_NOT_AN_OBJECT: dict = {}


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


def raw(events: Iterator[Event]) -> Iterator[bytes]:
    """The events' bytes, for a door that writes them; closing this closes ``events`` (and its upstream)."""
    try:
        for event in events:
            yield event.raw
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()

"""Compaction the gateway does itself: a summary of a context, asked of the provider's model over Chat
Completions, handed to the client as an opaque ``compaction`` item, and expanded back for the provider.

The item's ``encrypted_content`` is the summary sealed with AES-GCM under a key kept in the store (the same
for every worker and host sharing it), the tenant as associated data: it cannot be read or altered by the
client, and is refused (400) when it comes from another tenant or another deployment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from .emulation import chat_completions
from .emulation import request as translate
from .emulation.response import new_id
from .emulation.response import usage as responses_usage
from .errors import InvalidRequest, UpstreamError
from .reply import Reply, json_reply
from .routing import Target
from .seal import Box
from .upstream import Upstream

COMPACTION = "compaction"
# Marks the gateway's own items: any other encrypted_content is a provider's, passed through to it as is.
PREFIX = "gwc1."
# The summary reaches the provider as a developer message (a system message over Chat Completions), which
# every provider accepts anywhere in a conversation.
SUMMARY_HEADER = "Summary of the conversation so far (it replaces the earlier turns):\n\n"
SUMMARY_REQUEST = (
    "Summarise the conversation above so that it can be continued from the summary alone: keep every fact, "
    "decision, name, number, open question and tool result that may matter later, and what the user asked "
    "for last. Write only the summary."
)


class Sealer:
    """Seals summaries into compaction items and opens them again, for one tenant at a time."""

    def __init__(self, key_hex: Callable[[], str]):
        self._box = Box(key_hex)

    def seal(self, tenant: str, summary: str) -> str:
        return PREFIX + self._box.seal(orjson.dumps({"summary": summary, "at": int(time.time())}), tenant)

    def open(self, tenant: str, token: str) -> str:
        """The summary in ``token``. Raises ValueError when it is not one this deployment made for ``tenant``."""
        plain = self._box.open(token[len(PREFIX) :], tenant)
        try:
            return orjson.loads(plain)["summary"]
        except (KeyError, TypeError, orjson.JSONDecodeError):
            raise ValueError("not a compaction item of this gateway for this caller") from None

    def item(self, tenant: str, summary: str) -> dict:
        """A new compaction item holding ``summary``."""
        return {"id": new_id("cmp"), "type": COMPACTION, "encrypted_content": self.seal(tenant, summary)}


def threshold(body: dict) -> int | None:
    """The ``compact_threshold`` of the request's ``context_management`` compaction entry, if any."""
    for entry in body.get("context_management") or []:
        if isinstance(entry, dict) and entry.get("type") == "compaction":
            value = entry.get("compact_threshold")
            return value if isinstance(value, int) and not isinstance(value, bool) else 0
    return None


def by_gateway(body: dict, provider: Any, native: bool) -> bool:
    """Whether the gateway compacts this request itself: it asks for compaction and the provider it goes to
    does not do it (an emulated one, or a native one without its own).
    """
    return threshold(body) is not None and not (native and provider.compact)


def is_ours(item: dict) -> bool:
    content = item.get("encrypted_content")
    return item.get("type") == COMPACTION and isinstance(content, str) and content.startswith(PREFIX)


def has_ours(items: Iterable[dict]) -> bool:
    return any(is_ours(item) for item in items)


def expand(sealer: Sealer, tenant: str, items: list[dict], param: str = "input") -> list[dict]:
    """``items`` with the gateway's compaction items replaced by the summaries they hold (a new list when
    there are any). A provider's own compaction items stay as they are.

    Raises InvalidRequest (400, ``invalid_compaction``) naming the item for one that does not open: altered,
    or sealed for another tenant or by another deployment.
    """
    if not has_ours(items):
        return items
    out = []
    for i, item in enumerate(items):
        if not is_ours(item):
            out.append(item)
            continue
        try:
            summary = sealer.open(tenant, item["encrypted_content"])
        except ValueError:
            raise InvalidRequest(
                "The compaction item's encrypted_content was not made by this gateway for this API key, "
                "or was altered.",
                param=f"{param}[{i}].encrypted_content",
                code="invalid_compaction",
            ) from None
        out.append({"type": "message", "role": "developer", "content": SUMMARY_HEADER + summary})
    return out


def trigger_index(items: list[dict]) -> int | None:
    """Where a ``compaction_trigger`` item is in ``items`` (it must be the last), or None."""
    for i, item in enumerate(items):
        if item.get("type") == "compaction_trigger":
            return i
    return None


def since_last(history: list[dict]) -> list[dict]:
    """Stored history from its latest gateway compaction item on: that item summarises all before it."""
    for i in range(len(history) - 1, -1, -1):
        if is_ours(history[i]):
            return history[i:]
    return history


def summarise(upstream: Upstream, target: Target, model: str, items: list[dict]) -> tuple[str, dict] | Reply:
    """Ask ``target``'s model (Chat Completions) for a summary of ``items`` (already expanded): the summary
    and the chat usage, or the provider's error as a Reply.

    Raises InvalidRequest for items Chat Completions cannot carry, UpstreamError for an answer without text.
    """
    body = {"model": model, "input": [{"type": "message", "role": "user", "content": SUMMARY_REQUEST}]}
    # No tools: the model is asked for text, not offered what a tool search in the history loaded.
    chat = translate.to_chat(body, items, body["input"], max_tokens_param=target.provider.max_tokens_param, found=[])
    reply = json_reply(chat_completions(upstream, target, chat))
    if reply.data is None:
        return reply
    try:
        text = reply.data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        text = None
    if not isinstance(text, str) or not text.strip():
        raise UpstreamError(
            f"The provider '{target.provider.name}' answered the summary request without text.",
            code="upstream_invalid_response",
        )
    return text.strip(), reply.data.get("usage") or {}


def compacted(item: dict, usage: dict) -> dict:
    """The ``response.compaction`` object for a compaction item and the chat usage of making it.

    Its output is the one compaction item: the summary covers the user's messages too, and output items
    the SDK types cannot read (user messages) are left out.
    """
    return {
        "id": new_id("resp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [item],
        # As an emulated response's usage: the cache-write tokens too, which are priced apart (spend.py).
        "usage": responses_usage(usage),
    }

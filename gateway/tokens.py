"""Counting a request's input tokens where the provider has no /responses/input_tokens of its own.

Two ways: the provider's own counting endpoint (catalogue data: its request shape and URL), or an offline
count with the OpenAI encodings the ``bpe-openai`` wheel ships (nothing is downloaded, ever). The offline
count is the model's own tokenizer for OpenAI model families and an estimate for every other; both add the
per-message framing OpenAI documents for chat models, so both are estimates of what a provider will bill.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Any
from urllib.parse import quote

import orjson

from .errors import UpstreamError
from .providers.count_tokens import COUNT_SHAPES
from .reply import Reply, json_reply
from .routing import Target
from .upstream import Upstream

# OpenAI model families and their encodings; any other model is counted with o200k_base, as an estimate.
_CL100K = ("gpt-4-", "gpt-4", "gpt-3.5", "text-embedding-3", "text-embedding-ada")
_O200K = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "gpt-6", "o1", "o3", "o4", "gpt-oss", "chatgpt-4o", "computer-use")
# Per the OpenAI cookbook for chat models: each message costs 3 tokens of framing, the reply's priming 3.
_PER_MESSAGE = 3
_PRIMING = 3
_IMAGE = 85  # an image at detail "low"; higher details cost more, and only the provider knows how many
_lock = threading.Lock()


def encoding_for(model: str) -> tuple[str, bool]:
    """(encoding name, whether it is the model's own) for ``model``."""
    name = model.lower().rsplit("/", 1)[-1]  # "openai/gpt-4o" on routers
    if name.startswith(_O200K):
        return "o200k_base", True
    if name.startswith(_CL100K):
        return "cl100k_base", True
    return "o200k_base", False


@functools.cache
def _encoding(name: str) -> Any:
    # Loading an encoding takes about 0.4 s: once per process, on first use, never at import.
    with _lock, warnings.catch_warnings():
        # bpe-openai 0.1.4 reads its data with importlib.resources.open_binary, deprecated since Python 3.11.
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding(name)


# The tokenizer refuses very long text (a 1,000,000-character input was a 500): counted in pieces, cut
# at whitespace where there is some, so that a word is rarely split (an estimate either way).
_PIECE = 100_000


def _tokens(encoding: Any, text: str) -> int:
    if not text:
        return 0
    if len(text) <= _PIECE:
        return len(encoding.encode(text))
    total, start = 0, 0
    while start < len(text):
        end = min(start + _PIECE, len(text))
        if end < len(text):
            cut = text.rfind(" ", start + _PIECE // 2, end)
            end = cut + 1 if cut > 0 else end
        total += len(encoding.encode(text[start:end]))
        start = end
    return total


def count_offline(model: str, chat: dict) -> tuple[int, bool]:
    """(input tokens, exact-tokenizer) for a Chat Completions body (``emulation.request.to_chat``'s)."""
    name, own = encoding_for(model)
    enc = _encoding(name)
    total = _PRIMING
    for message in chat["messages"]:
        total += _PER_MESSAGE + _tokens(enc, message["role"])
        content = message.get("content")
        if isinstance(content, str):
            total += _tokens(enc, content)
        elif isinstance(content, list):
            for part in content:
                if part.get("type") == "text":
                    total += _tokens(enc, part.get("text", ""))
                elif part.get("type") == "image_url":
                    total += _IMAGE
                else:
                    total += _tokens(enc, orjson.dumps(part).decode())
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            total += (
                _PER_MESSAGE + _tokens(enc, function.get("name") or "") + _tokens(enc, function.get("arguments") or "")
            )
    if chat.get("tools"):
        total += _tokens(enc, orjson.dumps(chat["tools"]).decode())
    if chat.get("response_format"):
        total += _tokens(enc, orjson.dumps(chat["response_format"]).decode())
    return total, own


# ------------------------------------------------------------------------------------- providers' own
SHAPES = frozenset(COUNT_SHAPES)


def count_with_provider(upstream: Upstream, target: Target, chat: dict) -> int | Reply:
    """The count from the provider's own endpoint (``count_tokens`` of the catalogue), or its error as a Reply."""
    provider = target.provider
    build, auth, field = COUNT_SHAPES[provider.count_tokens or ""]
    headers = {**provider.headers, "Content-Type": "application/json", "Accept": "application/json"}
    if target.api_key:
        headers.update(auth(target.api_key))
    url = (provider.count_tokens_url or "").replace("{model}", quote(chat["model"], safe=""))
    resp = upstream.request(
        provider.name,
        "POST",
        url,
        headers=headers,
        body=orjson.dumps(build(chat)),
        timeout=upstream.timeout_for(target.timeout),
    )
    resp.secret = target.api_key
    reply = json_reply(resp)
    if reply.data is None:
        return reply
    count = reply.data.get(field)
    if not isinstance(count, int) or isinstance(count, bool):
        raise UpstreamError(
            f"The provider '{provider.name}' answered the token count without '{field}'.",
            code="upstream_invalid_response",
        )
    return count

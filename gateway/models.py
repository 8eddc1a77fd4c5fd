"""The provider's model list (``GET /models``, ``GET /models/{id}``), relayed as it answers.

Native and Chat Completions providers alike serve it, so it is one pass-through for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from .reply import Reply, json_reply, send
from .routing import Target
from .upstream import Upstream


def list_models(upstream: Upstream, target: Target, client_headers: Mapping[str, str]) -> Reply:
    return json_reply(send(upstream, target, "GET", "/models", _passed(target, client_headers)))


def retrieve_model(upstream: Upstream, target: Target, model_id: str, client_headers: Mapping[str, str]) -> Reply:
    """``model_id`` may hold slashes (``meta-llama/Llama-3-8b``): they stay path separators, as providers expect."""
    path = "/models/" + quote(model_id, safe="/@:")
    return json_reply(send(upstream, target, "GET", path, _passed(target, client_headers)))


def _passed(target: Target, client_headers: Mapping[str, str]) -> Mapping[str, str] | None:
    # The client's OpenAI-* headers mean something only to a provider that speaks the OpenAI API natively,
    # as for every other emulated call.
    return client_headers if target.provider.native else None

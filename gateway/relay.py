"""What each endpoint does, in plain values: pick the target, call native or emulated, keep the record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import native, routing
from .auth import Caller
from .errors import InvalidRequest
from .native import Reply
from .routing import Target
from .services import Services


def _native_only(target: Target) -> None:
    if not target.provider.native:
        raise InvalidRequest(
            f"Provider '{target.provider.name}' speaks only Chat Completions; the gateway's Responses API "
            "emulation for such providers is not available yet.",
            param="x-portkey-provider",
            code="unsupported_provider",
        )


def create(svc: Services, caller: Caller, headers: Mapping[str, str], body: dict, raw: bytes) -> tuple[Reply, Target]:
    """POST /v1/responses. ``body`` is the validated request, ``raw`` its bytes as received."""
    target = routing.targets(headers, caller, svc.catalogue)[0]
    _native_only(target)
    reply = native.create(svc.upstream, target, raw, stream=bool(body.get("stream")), client_headers=headers)
    return reply, target


def _target(svc: Services, caller: Caller, headers: Mapping[str, str]) -> Target:
    target = routing.targets(headers, caller, svc.catalogue)[0]
    _native_only(target)
    return target


def retrieve(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str, query: dict[str, Any]
) -> tuple[Reply, Target]:
    target = _target(svc, caller, headers)
    return native.retrieve(svc.upstream, target, response_id, query, headers), target


def delete(svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str) -> tuple[Reply, Target]:
    target = _target(svc, caller, headers)
    return native.delete(svc.upstream, target, response_id, headers), target


def input_items(
    svc: Services, caller: Caller, headers: Mapping[str, str], response_id: str, query: dict[str, Any]
) -> tuple[Reply, Target]:
    target = _target(svc, caller, headers)
    return native.input_items(svc.upstream, target, response_id, query, headers), target

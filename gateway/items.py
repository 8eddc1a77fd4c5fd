"""Items in the shapes the API returns them: what a caller sent as input, as ``input_items`` must list it;
and a turn's input with its ``item_reference`` items resolved to the stored items they name.

Callers may send the short forms the API accepts (``"content": "hi"``, parts of type ``text``, items without
``status``); the SDKs type the items they read back strictly, so a listed item has typed content parts and
every field its type requires. An ``item_reference`` is never listed: the SDK types cannot read one.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import InvalidRequest

REFERENCE = "item_reference"  # an input item that names a stored item by its id
# Prefixes for the ids the gateway mints for input items that arrive without one.
_ID_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


class FoundItem(NamedTuple):
    """A stored item found by its id (``Store.items_by_id``)."""

    item: dict  # ready to send again (see ``_resendable``)
    made_by: str | None  # the provider whose response output the item; None for an item only ever input


def mint_item_id(item: dict) -> str:
    kind = item.get("type", "message")
    # Any JSON may stand where a type should: an unknown one, or one that is not a string, gets "item".
    return f"{_ID_PREFIX.get(kind, 'item') if isinstance(kind, str) else 'item'}_{uuid.uuid4().hex}"


def input_items_of(request_input: Any, *, mint: bool = True) -> list[dict]:
    """A request's ``input`` as a list of items, each with an id (minted where missing, if ``mint``).

    An item that is nothing but an id refers to a stored item, as the API reads it: its type is
    ``item_reference`` (whose id is never minted: it names the item it refers to).
    """
    if request_input is None:
        return []
    if isinstance(request_input, str):
        raw = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": request_input}]}]
    else:
        raw = [dict(item) for item in request_input]
    for item in raw:
        item.setdefault("type", REFERENCE if item.keys() == {"id"} else "message")
        if mint and item["type"] != REFERENCE and (not isinstance(item.get("id"), str) or not item["id"]):
            item["id"] = mint_item_id(item)
    return raw


_INPUT_ROLES = frozenset({"user", "system", "developer"})
# Items whose status the SDK types require; the API reports what it was given as done.
_WITH_STATUS = frozenset({"message", "function_call", "function_call_output"})


def as_listed(item: dict) -> dict:
    """``item`` (an input item as received, with its id) as ``input_items`` lists it; a new dict.

    Item types the gateway passes through without knowing them are returned as they are.
    """
    kind = item.get("type") or "message"
    out = {**item, "type": kind}
    if kind in _WITH_STATUS and not out.get("status"):
        out["status"] = "completed"
    if kind == "message":
        out["content"] = _content(out.get("role"), out.get("content"))
    elif kind == "function_call":
        out.setdefault("arguments", "")
    elif kind == "function_call_output":
        if isinstance(out.get("output"), list):
            out["output"] = [_input_part(p) for p in out["output"]]
    elif kind == "reasoning":
        out.setdefault("summary", [])
    return out


def _content(role: Any, content: Any) -> Any:
    assistant = role not in _INPUT_ROLES
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return content  # the create schema refuses these; nothing sensible to make of one stored earlier
    return [_output_part(p) if assistant else _input_part(p) for p in content]


def _input_part(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        # Chat-style "text" and an echoed "output_text" both mean text the caller gave the model.
        return {**_without(part, "annotations", "logprobs"), "type": "input_text", "text": part.get("text", "")}
    if kind == "input_image":
        return {"detail": "auto", **part} if not part.get("detail") else part
    return part


def _output_part(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    if part.get("type") in ("text", "input_text", "output_text"):
        return {"annotations": [], "logprobs": [], **part, "type": "output_text", "text": part.get("text", "")}
    return part


def _without(part: dict, *keys: str) -> dict:
    return {k: v for k, v in part.items() if k not in keys}


# ------------------------------------------------------------------------------------------ references
def references(items: list[dict]) -> dict[int, str]:
    """The ids the ``item_reference`` items among ``items`` name, by position; raises InvalidRequest for
    one without an id.
    """
    wanted = {}
    for position, item in enumerate(items):
        if item["type"] == REFERENCE:
            if not isinstance(item.get("id"), str) or not item["id"]:
                raise InvalidRequest("An item_reference needs the id of an item.", param=f"input[{position}].id")
            wanted[position] = item["id"]
    return wanted


def item_not_found(position: int, item_id: str) -> InvalidRequest:
    return InvalidRequest(f"Item with id '{item_id}' not found.", param=f"input[{position}]", code="item_not_found")


@dataclasses.dataclass(frozen=True)
class TurnInput:
    """A create's input items, with the ``item_reference`` items among them resolved from the store.

    ``items`` is what is recorded as the response's input items and what an emulated provider is sent:
    each reference replaced by a copy of the item it names, under that item's id, so that ``input_items``
    lists real items. A native provider is sent a reference as it came when it made the item itself (it
    knows its own items), else the item. A reference the store does not hold for the caller stays as it
    is, and ``unresolved`` names the first: only a native provider continuing its own conversation for a
    caller with its own key is sent it (the provider may know an item the gateway never saw); everywhere
    else it is a 400.
    """

    raw: Any  # the request's input
    items: list[dict]
    resolved: dict[int, FoundItem] = dataclasses.field(default_factory=dict)  # by position in the input
    unresolved: tuple[int, str] | None = None  # (position, id)

    @classmethod
    def resolve(
        cls, raw: Any, items: list[dict], wanted: Mapping[int, str], found: Mapping[str, FoundItem | None]
    ) -> TurnInput:
        """``items`` (``raw`` as items) with the references at ``wanted`` replaced by what the store
        ``found`` (``Store.items_by_id``). Raises the 400 of an unknown id for another tenant's item.
        """
        items = list(items)
        resolved, unresolved = {}, None
        for position, item_id in wanted.items():
            if item_id not in found:
                unresolved = unresolved or (position, item_id)
                continue
            hit = found[item_id]
            if hit is None:
                raise item_not_found(position, item_id)
            resolved[position] = hit
            items[position] = {**hit.item, "id": item_id}
        return cls(raw, items, resolved, unresolved)

    def native_input(self, provider: str) -> list[dict] | None:
        """The input for the native ``provider``, or None when the caller's input can go as it came: the
        caller's items (without the ids the gateway minted), references to items the provider did not
        make replaced by the items.
        """
        elsewhere = {p: found.item for p, found in self.resolved.items() if found.made_by != provider}
        if not elsewhere:
            return None
        items = input_items_of(self.raw, mint=False)
        for position, item in elsewhere.items():
            items[position] = item
        return items

    def check_resolved(self) -> None:
        """Raises the 400 for a reference the store does not hold for this caller."""
        if self.unresolved is not None:
            raise item_not_found(*self.unresolved)


def list_page(data: list[dict], has_more: bool) -> dict:
    """One page of a list endpoint (input items, a conversation's items), in the API's list shape."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


# Input items whose id or status the client gave and a provider needs again: a local_shell_call_output names
# its call by ``id``; these calls and apply_patch outputs must carry their ``status``.
_KEEPS_ID = frozenset({"local_shell_call", "local_shell_call_output"})
_KEEPS_STATUS = frozenset({"local_shell_call", "apply_patch_call", "apply_patch_call_output"})


def resendable_input(item: dict) -> dict:
    """An input item as it can be sent to a provider again: without the id and status the gateway minted for
    it (``as_listed`` adds a status), but with those the client gave where the item means them. A new dict.
    """
    kind = item.get("type")
    drop = {"id", "status"}
    if kind in _KEEPS_ID:
        drop.discard("id")
    if kind in _KEEPS_STATUS:
        drop.discard("status")
    return {k: v for k, v in item.items() if k not in drop}

"""What the Conversations API endpoints do, in plain values. Conversations are the gateway's own, the same
for every provider: no provider is asked, and a conversation of another tenant is a 404 like a missing one.
"""

from __future__ import annotations

from typing import Any

from . import compaction
from .auth import Caller
from .errors import InvalidRequest, NotFound, conversation_not_found
from .items import TurnInput, as_listed, input_items_of, list_page, references
from .services import Services
from .store import StoredConversation

MAX_ITEMS = 20  # per call, as the API allows


def _items(svc: Services, caller: Caller, raw: list[dict], param: str = "items") -> list[dict]:
    """The items to add, each with an id; references resolved from the caller's stored items, the gateway's
    compaction items checked. Raises InvalidRequest naming the item at fault.
    """
    if len(raw) > MAX_ITEMS:
        raise InvalidRequest(f"You may add at most {MAX_ITEMS} items at a time.", param=param)
    items = input_items_of(raw)
    for i, item in enumerate(items):
        # Kept and listed as given: a message must have content the SDKs can read back.
        if item["type"] == "message" and not isinstance(item.get("content"), str | list):
            message = "A message item needs content: a string or a list of parts."
            raise InvalidRequest(message, param=f"{param}[{i}].content")
    wanted = references(items)
    if wanted:
        try:
            turn = TurnInput.resolve(raw, items, wanted, svc.store.items_by_id(caller.tenant, wanted.values()))
            turn.check_resolved()
        except InvalidRequest as err:  # named as in a create's input: here they are the items
            if err.param and err.param.startswith("input"):
                err.param = param + err.param[len("input") :]
            raise
        items = turn.items
    compaction.expand(svc.sealer, caller.tenant, items, param)
    return items


def _owned(svc: Services, caller: Caller, conversation_id: str) -> StoredConversation:
    conv = svc.store.conversations.get(caller.tenant, conversation_id)
    if conv is None:
        raise conversation_not_found(conversation_id)
    return conv


def _item_not_found(item_id: str) -> NotFound:
    return NotFound(f"Item with id '{item_id}' not found.", param="item_id")


def create(svc: Services, caller: Caller, body: dict) -> dict:
    """POST /v1/conversations: a new conversation, with its first items if given."""
    items = _items(svc, caller, body.get("items") or [])
    return svc.store.conversations.create(caller.tenant, body.get("metadata") or {}, items).as_object()


def retrieve(svc: Services, caller: Caller, conversation_id: str) -> dict:
    return _owned(svc, caller, conversation_id).as_object()


def update(svc: Services, caller: Caller, conversation_id: str, metadata: dict | None) -> dict:
    conv = svc.store.conversations.update(caller.tenant, conversation_id, metadata or {})
    if conv is None:
        raise conversation_not_found(conversation_id)
    return conv.as_object()


def delete(svc: Services, caller: Caller, conversation_id: str) -> dict:
    if not svc.store.conversations.delete(caller.tenant, conversation_id):
        raise conversation_not_found(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def list_items(svc: Services, caller: Caller, conversation_id: str, query: dict[str, Any]) -> dict:
    """One page of the conversation's items (``limit``, ``order``, ``after``), in the API's item shapes."""
    page = svc.store.conversations.list_items(
        caller.tenant, conversation_id, limit=query["limit"], order=query["order"], after=query.get("after")
    )
    if page is None:
        raise conversation_not_found(conversation_id)
    data, has_more = page
    return list_page([as_listed(item) for item in data], has_more)


def add_items(svc: Services, caller: Caller, conversation_id: str, raw: list[dict]) -> dict:
    """POST /v1/conversations/{id}/items: the items added, as a list page."""
    items = _items(svc, caller, raw)
    if not svc.store.conversations.add_items(caller.tenant, conversation_id, items):
        raise conversation_not_found(conversation_id)
    return list_page([as_listed(item) for item in items], False)


def retrieve_item(svc: Services, caller: Caller, conversation_id: str, item_id: str) -> dict:
    found, item = svc.store.conversations.get_item(caller.tenant, conversation_id, item_id)
    if not found:
        raise conversation_not_found(conversation_id)
    if item is None:
        raise _item_not_found(item_id)
    return as_listed(item)


def delete_item(svc: Services, caller: Caller, conversation_id: str, item_id: str) -> dict:
    """DELETE /v1/conversations/{id}/items/{item_id}: the conversation, as the API answers."""
    conv, deleted = svc.store.conversations.delete_item(caller.tenant, conversation_id, item_id)
    if conv is None:
        raise conversation_not_found(conversation_id)
    if not deleted:
        raise _item_not_found(item_id)
    return conv.as_object()

"""``/v1/conversations``: OpenAI's Conversations API — a conversation's items, which a
response with ``conversation`` reads as its history and extends with its input and output.
A conversation belongs to the principal that made it (another key's is not found)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from llmport.api.jobs.caller import JSON_LIMIT, caller, owner_of, signed_body
from llmport.api.jobs.params import checked_metadata, unknown_fields
from llmport.api.openai.validation import parse_json_object
from llmport.db.conversations import ConversationTables
from llmport.db.job_models import Conversation
from llmport.errors import InvalidRequestError, NotFoundError
from llmport.gateway.gateway import Gateway
from llmport.translation.items import stored_items
from llmport.translation.responses_to_chat import chat_messages

MAX_ITEMS = 20  # items one request may add, as OpenAI's API allows


def conversation_object(row: Conversation) -> dict[str, Any]:
    return {"id": row.id, "object": "conversation", "created_at": int(row.created_at.timestamp()),
            "metadata": row.meta or {}}


def checked_items(value: Any, param: str = "items") -> list[dict[str, Any]]:
    """Items to add, checked as a response's input would be, then given ids."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS or not all(
            isinstance(item, dict) for item in value):
        raise InvalidRequestError(f"{param} must be a list of at most {MAX_ITEMS} items.",
                                  param=param)
    if value:
        chat_messages(value, param)  # 400 naming an item chat cannot carry
    return stored_items(value)


def conversations_router(gateway: Gateway, tables: ConversationTables) -> APIRouter:
    router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

    async def who(request: Request) -> tuple[str, dict[str, Any]]:
        ctx = await caller(gateway, request)
        raw = await signed_body(gateway, request, ctx, JSON_LIMIT)
        return owner_of(ctx.principal), (parse_json_object(raw) if request.method == "POST"
                                         else {})

    async def found(owner: str, conversation_id: str) -> Conversation:
        row = await tables.get(owner, conversation_id)
        if row is None:
            raise NotFoundError(f"No conversation with id {conversation_id!r}.",
                                param="conversation_id", code="conversation_not_found")
        return row

    @router.post("", summary="Create a conversation (optionally with items)")
    async def create(request: Request) -> dict[str, Any]:
        owner, body = await who(request)
        unknown_fields(body, {"items", "metadata"})
        items = checked_items(body.get("items"))
        return conversation_object(await tables.create(
            owner, checked_metadata(body.get("metadata")), items))

    @router.get("/{conversation_id}", summary="A conversation")
    async def get(request: Request, conversation_id: str) -> dict[str, Any]:
        owner, _ = await who(request)
        return conversation_object(await found(owner, conversation_id))

    @router.post("/{conversation_id}", summary="Change a conversation's metadata")
    async def update(request: Request, conversation_id: str) -> dict[str, Any]:
        owner, body = await who(request)
        await found(owner, conversation_id)
        unknown_fields(body, {"metadata"})
        row = await tables.set_metadata(owner, conversation_id,
                                        checked_metadata(body.get("metadata")))
        assert row is not None
        return conversation_object(row)

    @router.delete("/{conversation_id}", summary="Delete a conversation and its items")
    async def delete(request: Request, conversation_id: str) -> dict[str, Any]:
        owner, _ = await who(request)
        if not await tables.delete(owner, conversation_id):
            raise NotFoundError(f"No conversation with id {conversation_id!r}.",
                                param="conversation_id", code="conversation_not_found")
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    @router.post("/{conversation_id}/items", summary="Add items to a conversation")
    async def add_items(request: Request, conversation_id: str) -> dict[str, Any]:
        owner, body = await who(request)
        await found(owner, conversation_id)
        unknown_fields(body, {"items"})
        items = checked_items(body.get("items"))
        if not items:
            raise InvalidRequestError("items must not be empty.", param="items")
        await tables.append(owner, conversation_id, items)
        return _page(items, False)

    @router.get("/{conversation_id}/items", summary="A conversation's items")
    async def list_items(request: Request, conversation_id: str,
                         limit: int = Query(20, ge=1, le=100),
                         order: str = Query("desc", pattern="^(asc|desc)$"),
                         after: str | None = None) -> dict[str, Any]:
        owner, _ = await who(request)
        await found(owner, conversation_id)
        items = await tables.items(conversation_id)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        return _page(items[:limit], len(items) > limit)

    @router.get("/{conversation_id}/items/{item_id}", summary="One item of a conversation")
    async def get_item(request: Request, conversation_id: str, item_id: str) -> dict[str, Any]:
        owner, _ = await who(request)
        await found(owner, conversation_id)
        for item in await tables.items(conversation_id):
            if item["id"] == item_id:
                return item
        raise NotFoundError(f"No item {item_id!r} in conversation {conversation_id!r}.",
                            param="item_id", code="item_not_found")

    @router.delete("/{conversation_id}/items/{item_id}", summary="Remove an item")
    async def remove_item(request: Request, conversation_id: str,
                          item_id: str) -> dict[str, Any]:
        owner, _ = await who(request)
        row = await found(owner, conversation_id)
        if not await tables.remove_item(conversation_id, item_id):
            raise NotFoundError(f"No item {item_id!r} in conversation {conversation_id!r}.",
                                param="item_id", code="item_not_found")
        return conversation_object(row)

    return router


def _page(items: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": more}

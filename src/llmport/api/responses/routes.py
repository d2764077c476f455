"""``GET``/``DELETE /v1/responses/{id}`` and ``GET /v1/responses/{id}/input_items``: stored
responses, the caller's own only (another key's is not found)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from llmport.api.jobs.caller import caller_owner
from llmport.db.job_models import StoredResponse
from llmport.db.responses import ResponseTables
from llmport.errors import NotFoundError
from llmport.gateway.gateway import Gateway


def responses_router(gateway: Gateway, tables: ResponseTables) -> APIRouter:
    router = APIRouter(prefix="/v1/responses", tags=["responses"])

    async def found(request: Request, response_id: str) -> tuple[str, StoredResponse]:
        owner = await caller_owner(gateway, request)
        row = await tables.get(owner, response_id)
        if row is None:
            raise NotFoundError(f"No response with id {response_id!r}.", param="response_id",
                                code="response_not_found")
        return owner, row

    @router.get("/{response_id}", summary="A stored response")
    async def get_response(request: Request, response_id: str) -> dict[str, Any]:
        return (await found(request, response_id))[1].body

    @router.delete("/{response_id}", summary="Delete a stored response")
    async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
        owner, _ = await found(request, response_id)
        await tables.delete(owner, response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    @router.get("/{response_id}/input_items", summary="A stored response's input items")
    async def input_items(request: Request, response_id: str,
                          limit: int = Query(20, ge=1, le=100),
                          order: str = Query("desc", pattern="^(asc|desc)$"),
                          after: str | None = None) -> dict[str, Any]:
        items = list((await found(request, response_id))[1].input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items[:limit]
        return {"object": "list", "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}

    return router

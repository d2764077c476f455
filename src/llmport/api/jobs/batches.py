"""``/v1/batches``: create, list, read and cancel batch jobs, as OpenAI's Batch API does.

Creation checks what can be checked at once (the input file is yours and for batches, the
endpoint is served, the window is ``24h``, the metadata's size); the file's lines are
checked by the runner, which fails the batch (``errors``) as OpenAI does.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request

from llmport.api.internal import run_as
from llmport.api.jobs.caller import JSON_LIMIT, caller, caller_owner, owner_of, signed_body
from llmport.api.jobs.params import checked_expiry, checked_metadata, unknown_fields
from llmport.api.openai.validation import parse_json_object
from llmport.batches.input import OPENAI_ENDPOINTS
from llmport.batches.runner import BatchRunner, expires_after
from llmport.db.job_models import Batch
from llmport.db.jobs import MESSAGES, JobTables, new_batch_id, now
from llmport.errors import ConflictError, InvalidRequestError, NotFoundError
from llmport.gateway.gateway import Gateway

WINDOWS = ("24h",)
TIMES = ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at",
         "failed_at", "expired_at", "cancelling_at", "cancelled_at")


def batch_object(row: Batch) -> dict[str, Any]:
    """The Batch object; fields without a value yet are left out, as the spec has them."""
    body: dict[str, Any] = {
        "id": row.id, "object": "batch", "endpoint": row.endpoint,
        "input_file_id": row.input_file_id, "completion_window": row.completion_window,
        "status": row.status,
        "request_counts": {"total": row.total, "completed": row.completed,
                           "failed": row.failed},
        "usage": {"input_tokens": row.input_tokens,
                  "input_tokens_details": {"cached_tokens": row.cached_tokens},
                  "output_tokens": row.output_tokens,
                  "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": row.input_tokens + row.output_tokens},
        "metadata": row.meta}
    for name in TIMES:
        value: datetime | None = getattr(row, name)
        if value is not None:
            body[name] = int(value.timestamp())
    for name in ("model", "output_file_id", "error_file_id"):
        if getattr(row, name) is not None:
            body[name] = getattr(row, name)
    if row.errors:
        body["errors"] = {"object": "list", "data": row.errors}
    return body


def batches_router(gateway: Gateway, tables: JobTables, runner: BatchRunner) -> APIRouter:
    router = APIRouter(prefix="/v1/batches", tags=["batches"])

    async def who(request: Request) -> str:
        return await caller_owner(gateway, request)

    async def found(owner: str, batch_id: str) -> Batch:
        row = await tables.get_batch(owner, batch_id)
        if row is None or row.endpoint == MESSAGES:  # Message Batches have their own API
            raise NotFoundError(f"No such batch: {batch_id}", param="batch_id",
                                code="batch_not_found")
        return row

    @router.post("", summary="Create a batch from an uploaded file of requests")
    async def create(request: Request) -> dict[str, Any]:
        ctx = await caller(gateway, request)
        body = parse_json_object(await signed_body(gateway, request, ctx, JSON_LIMIT))
        owner = owner_of(ctx.principal)
        endpoint, window, metadata, file_id = _checked(body)
        output_expires_in = checked_expiry(body.get("output_expires_after"),
                                           "output_expires_after")
        stored = await tables.get_file(owner, file_id)
        if stored is None:
            raise NotFoundError(f"No such File object: {file_id}", param="input_file_id",
                                code="file_not_found")
        if stored.purpose != "batch":
            raise InvalidRequestError(f"File {file_id} was uploaded with purpose "
                                      f"{stored.purpose!r}; a batch needs purpose 'batch'.",
                                      param="input_file_id", code="invalid_file_purpose")
        created = now()
        row = await tables.create_batch(Batch(
            id=new_batch_id(), owner=owner, run_as=run_as(ctx.principal), endpoint=endpoint,
            input_file_id=file_id, completion_window=window, status="validating",
            created_at=created, expires_at=created + expires_after(window), meta=metadata,
            output_expires_in=output_expires_in,
            total=0, completed=0, failed=0, input_tokens=0, output_tokens=0, cached_tokens=0))
        runner.wake()
        return batch_object(row)

    @router.get("", summary="List your batches, newest first")
    async def list_batches(request: Request, limit: int = Query(20, ge=1, le=100),
                           after: str | None = None) -> dict[str, Any]:
        rows = await tables.list_batches(await who(request), limit=limit + 1, after=after,
                                         messages=False)
        data = [batch_object(row) for row in rows[:limit]]
        listed: dict[str, Any] = {"object": "list", "data": data, "has_more": len(rows) > limit}
        if data:
            listed.update(first_id=data[0]["id"], last_id=data[-1]["id"])
        return listed

    @router.get("/{batch_id}", summary="A batch's state and counts")
    async def get_batch(request: Request, batch_id: str) -> dict[str, Any]:
        return batch_object(await found(await who(request), batch_id))

    @router.post("/{batch_id}/cancel", summary="Cancel a batch (what was answered is kept)")
    async def cancel(request: Request, batch_id: str) -> dict[str, Any]:
        owner = await who(request)
        row = await tables.cancel_batch(owner, batch_id)
        if row is None:
            raise NotFoundError(f"No such batch: {batch_id}", param="batch_id",
                                code="batch_not_found")
        if row.status not in ("cancelling", "cancelled"):
            raise ConflictError(f"Batch {batch_id} is {row.status} and cannot be cancelled.",
                                code="batch_not_cancellable")
        runner.wake()
        return batch_object(row)

    return router


def _checked(body: dict[str, Any]) -> tuple[str, str, dict[str, str] | None, str]:
    """endpoint, completion_window, metadata and input_file_id of a creation request."""
    unknown_fields(body, {"input_file_id", "endpoint", "completion_window", "metadata",
                          "output_expires_after"})
    file_id, endpoint, window = (body.get(k) for k in ("input_file_id", "endpoint",
                                                        "completion_window"))
    if not isinstance(file_id, str) or not file_id:
        raise InvalidRequestError("input_file_id is required.", param="input_file_id")
    if endpoint not in OPENAI_ENDPOINTS:
        raise InvalidRequestError(f"endpoint must be one of {', '.join(OPENAI_ENDPOINTS)}.",
                                  param="endpoint", code="unsupported_endpoint")
    if window not in WINDOWS:
        raise InvalidRequestError("completion_window must be '24h'.",
                                  param="completion_window")
    metadata = checked_metadata(body.get("metadata"))
    return endpoint, window, metadata, file_id

"""``/v1/messages/batches``: Anthropic's Message Batches API, on the same runner as OpenAI's
batches (``batches/runner.py``) — every request through the whole pipeline as the key that
made the batch, in the Messages form, for any configured model.

The requests are kept as a batch input file of the caller's (its lines in the runner's
form, with ``url: /v1/messages``); the results are the runner's output and error files,
read back as Anthropic's result lines (``succeeded`` with the message, ``errored`` with
the error, ``canceled`` or ``expired`` for requests never sent).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from llmport.api.internal import run_as
from llmport.api.jobs.caller import caller, caller_owner, owner_of, signed_body
from llmport.api.openai.validation import parse_json_object
from llmport.batches.input import lines_of, off_loop
from llmport.batches.runner import BatchRunner, expires_after
from llmport.batches.settings import BatchesConfig
from llmport.db.job_models import Batch
from llmport.db.jobs import MESSAGES, JobTables, NewFile, now
from llmport.errors import InvalidRequestError, NotFoundError
from llmport.gateway.gateway import Gateway

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
STATUS = {"cancelling": "canceling", "completed": "ended", "failed": "ended",
          "cancelled": "ended", "expired": "ended"}
MAX_REQUESTS = 100_000


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def batch_object(row: Batch, request: Request) -> dict[str, Any]:
    ended = STATUS.get(row.status, "in_progress") == "ended"
    answered = row.completed + row.failed
    expired = row.expired or 0  # counted in ``failed`` too (the error file lists them)
    counts = {"processing": 0 if ended else row.total - answered, "succeeded": row.completed,
              "errored": row.failed - expired, "canceled": 0, "expired": expired}
    if row.status == "cancelled":
        counts["canceled"] = row.total - answered
    return {
        "id": row.id, "type": "message_batch",
        "processing_status": STATUS.get(row.status, "in_progress"), "request_counts": counts,
        "created_at": _time(row.created_at), "expires_at": _time(row.expires_at),
        "ended_at": _time(row.completed_at or row.cancelled_at or row.expired_at
                          or row.failed_at),
        "cancel_initiated_at": _time(row.cancelling_at), "archived_at": None,
        "results_url": f"{str(request.base_url).rstrip('/')}/v1/messages/batches/{row.id}/results"
        if ended else None}


def message_batches_router(gateway: Gateway, tables: JobTables, runner: BatchRunner,
                           config: BatchesConfig) -> APIRouter:
    router = APIRouter(prefix="/v1/messages/batches", tags=["anthropic"])
    limit_bytes = int(config.max_file_mb * 1024 * 1024)

    async def found(request: Request, batch_id: str) -> tuple[str, Batch]:
        owner = await caller_owner(gateway, request)
        row = await tables.get_batch(owner, batch_id)
        if row is None or row.endpoint != MESSAGES:
            raise NotFoundError(f"No message batch with id {batch_id!r}.")
        return owner, row

    @router.post("", summary="Create a Message Batch")
    async def create(request: Request) -> dict[str, Any]:
        ctx = await caller(gateway, request)
        raw = await signed_body(gateway, request, ctx, limit_bytes)
        lines = await off_loop(len(raw), _checked_body, raw, config.max_lines)
        del raw  # the lines hold the requests now; stored without a joined copy of them all
        owner = owner_of(ctx.principal)
        stored = await tables.create_file(owner, NewFile(
            "batch", "message_batch_requests.jsonl", _each(lines)))
        created = now()
        row = await tables.create_batch(Batch(
            id=f"msgbatch_{stored.id.removeprefix('file-')}", owner=owner,
            run_as=run_as(ctx.principal), endpoint=MESSAGES, input_file_id=stored.id,
            completion_window="24h", status="validating", created_at=created,
            expires_at=created + expires_after("24h"), meta=None, total=len(lines),
            completed=0, failed=0, input_tokens=0, output_tokens=0, cached_tokens=0))
        runner.wake()
        return batch_object(row, request)

    @router.get("", summary="List Message Batches, newest first")
    async def list_batches(request: Request, limit: int = Query(20, ge=1, le=1000),
                           after_id: str | None = None,
                           before_id: str | None = None) -> dict[str, Any]:
        owner = await caller_owner(gateway, request)
        rows = await tables.list_batches(owner, limit=limit + 1, after=after_id,
                                         before=before_id, messages=True)
        more = len(rows) > limit
        rows = rows[:limit] if before_id is None else rows[-limit:]
        data = [batch_object(row, request) for row in rows]
        return {"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}

    @router.get("/{batch_id}", summary="A Message Batch")
    async def get_batch(request: Request, batch_id: str) -> dict[str, Any]:
        return batch_object((await found(request, batch_id))[1], request)

    @router.post("/{batch_id}/cancel", summary="Cancel a Message Batch")
    async def cancel(request: Request, batch_id: str) -> dict[str, Any]:
        owner, _ = await found(request, batch_id)
        row = await tables.cancel_batch(owner, batch_id)
        assert row is not None
        runner.wake()
        return batch_object(row, request)

    @router.delete("/{batch_id}", summary="Delete an ended Message Batch")
    async def delete(request: Request, batch_id: str) -> dict[str, Any]:
        owner, row = await found(request, batch_id)
        if STATUS.get(row.status) != "ended":
            raise InvalidRequestError("A Message Batch can be deleted only once it has ended; "
                                      "cancel it first.", code="invalid_request_error")
        await tables.delete_batch(owner, batch_id)
        return {"id": batch_id, "type": "message_batch_deleted"}

    @router.get("/{batch_id}/results", summary="A Message Batch's results (JSON lines)")
    async def results(request: Request, batch_id: str) -> StreamingResponse:
        owner, row = await found(request, batch_id)
        if STATUS.get(row.status) != "ended":
            raise InvalidRequestError("The batch is still processing; its results are ready "
                                      "once processing_status is 'ended'.",
                                      code="invalid_request_error")
        return StreamingResponse(_results(tables, owner, row), media_type="application/binary")

    return router


async def _each(lines: list[bytes]) -> AsyncIterator[bytes]:
    for line in lines:
        yield line


def _checked_body(raw: bytes, max_lines: int) -> list[bytes]:
    return _checked_requests(parse_json_object(raw), max_lines)


def _checked_requests(body: dict[str, Any], max_lines: int) -> list[bytes]:
    """The runner's input lines of a creation request; 400 naming the first bad request."""
    requests = body.get("requests")
    if set(body) - {"requests"}:
        raise InvalidRequestError(f"Unsupported parameter: {sorted(set(body) - {'requests'})[0]}.")
    if not isinstance(requests, list) or not requests:
        raise InvalidRequestError("requests: a non-empty list is required.")
    if len(requests) > min(max_lines, MAX_REQUESTS):
        raise InvalidRequestError(f"requests: at most {min(max_lines, MAX_REQUESTS)} a batch.")
    seen: set[str] = set()
    lines = []
    for index, item in enumerate(requests):
        where = f"requests.{index}"
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise InvalidRequestError(f"{where}.custom_id: 1 to 64 letters, digits, - or _.")
        if custom_id in seen:
            raise InvalidRequestError(f"{where}.custom_id: {custom_id!r} is used twice.")
        if not isinstance(params, dict) or not isinstance(params.get("model"), str):
            raise InvalidRequestError(f"{where}.params: an object with a model is required.")
        if params.get("stream"):
            raise InvalidRequestError(f"{where}.params.stream: batch requests are not "
                                      "streamed.")
        seen.add(custom_id)
        lines.append(orjson.dumps({"custom_id": custom_id, "method": "POST", "url": MESSAGES,
                                   "body": params}, option=orjson.OPT_APPEND_NEWLINE))
    return lines


async def _results(tables: JobTables, owner: str, row: Batch) -> AsyncIterator[bytes]:
    """Anthropic's result lines: one per request, those never sent ``canceled``/``expired``;
    read from the runner's files and sent a slice at a time, never whole in memory."""
    answered: set[str] = set()
    for file_id in (row.output_file_id, row.error_file_id):
        if file_id is not None:
            async for some in lines_of(tables.file_parts(owner, file_id)):
                yield b"".join(_result(raw, answered) for _, raw in some)
    if row.status == "cancelled":
        async for some in lines_of(tables.file_parts(owner, row.input_file_id)):
            unsent = (orjson.loads(raw)["custom_id"] for _, raw in some)
            yield b"".join(orjson.dumps({"custom_id": custom_id, "result": {"type": "canceled"}},
                                        option=orjson.OPT_APPEND_NEWLINE)
                           for custom_id in unsent if custom_id not in answered)


def _result(raw: bytes, answered: set[str]) -> bytes:
    """The result line of one line of the runner's output or error file."""
    line = orjson.loads(raw)
    answered.add(line["custom_id"])
    response = line.get("response")
    if response is None:
        result: dict[str, Any] = {"type": "expired"}
    elif 200 <= response["status_code"] < 300:
        result = {"type": "succeeded", "message": response["body"]}
    else:
        result = {"type": "errored", "error": response["body"]}
    return orjson.dumps({"custom_id": line["custom_id"], "result": result},
                        option=orjson.OPT_APPEND_NEWLINE)

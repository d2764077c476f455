"""``/v1/files``: upload, list, read, download and delete files, as OpenAI's Files API does.

A file belongs to the principal that uploaded it (another key gets 404 for it). Its bytes
are kept in the database, so any replica serves it. A file uploaded with ``expires_after``
is gone for its owner once it expires, and deleted within minutes (``Jobs``); a batch
that is still reading it keeps it until the batch ends. A ``batch`` file's lines are checked
at upload (UTF-8, one JSON object a line): a malformed file is refused at once rather
than failing its batch later.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import FormData, UploadFile

from llmport.api.jobs.caller import caller, caller_owner, owner_of, signed_form
from llmport.api.jobs.params import checked_expiry, list_page
from llmport.batches.input import check_input
from llmport.batches.settings import BatchesConfig
from llmport.db.job_models import StoredFile
from llmport.db.jobs import PART, JobTables, NewFile
from llmport.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
)
from llmport.gateway.gateway import Gateway

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the purpose field, beyond the file
# The form's fields: ``expires_after`` as the openai client sends a nested object.
FIELDS = frozenset({"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"})


def file_object(row: StoredFile) -> dict[str, Any]:
    return {"id": row.id, "object": "file", "bytes": row.bytes,
            "created_at": int(row.created_at.timestamp()), "filename": row.filename,
            "purpose": row.purpose, "status": "processed",
            "expires_at": int(row.expires_at.timestamp()) if row.expires_at else None}


def files_router(gateway: Gateway, tables: JobTables, config: BatchesConfig) -> APIRouter:
    router = APIRouter(prefix="/v1/files", tags=["files"])
    limit = int(config.max_file_mb * 1024 * 1024)
    quota = None if config.max_storage_mb is None else int(config.max_storage_mb * 1024 * 1024)
    reading = asyncio.Semaphore(config.concurrent_uploads)

    async def who(request: Request) -> str:
        return await caller_owner(gateway, request)

    async def found(request: Request, file_id: str) -> StoredFile:
        row = await tables.get_file(await who(request), file_id)
        if row is None:
            raise NotFoundError(f"No such File object: {file_id}", param="file_id",
                                code="file_not_found")
        return row

    @router.post("", summary="Upload a file (multipart: file, purpose)")
    async def upload(request: Request) -> dict[str, Any]:
        ctx = await caller(gateway, request)
        async with reading:  # a few at a time: each spools its file to disk, then stores it
            form = await signed_form(gateway, request, ctx, limit + FORM_OVERHEAD,
                                     max_fields=8)
            try:
                return file_object(await _store(form, owner_of(ctx.principal)))
            finally:
                await form.close()

    async def _store(form: FormData, owner: str) -> StoredFile:
        """The form's file stored, once its fields, size and (for a batch) lines are sound."""
        upload, purpose, expires_in = _fields(form)
        size = upload.size or 0
        if quota is not None and await tables.stored_bytes(owner) + size > quota:
            raise PayloadTooLargeError(
                f"Storing this file would take your files past {quota} bytes; delete some "
                "first.", param="file", code="storage_quota_exceeded")
        if size > limit:
            raise InvalidRequestError(f"The file is {size} bytes; files may have at "
                                      f"most {limit}.", param="file", code="file_too_large")
        if purpose == "batch":
            check = await check_input(_pieces(upload), first_error=True)
            if check.errors:
                raise InvalidRequestError(
                    f"Not a batch input file (JSON lines): {check.errors[0]['message']}",
                    param="file", code="invalid_file_format")
        return await tables.create_file(owner, NewFile(
            purpose, upload.filename or "upload", _pieces(upload), expires_in))

    @router.get("", summary="List your files, newest first")
    async def list_files(request: Request, purpose: str | None = None,
                         limit: int = Query(10_000, ge=1, le=10_000),
                         order: str = Query("desc", pattern="^(asc|desc)$"),
                         after: str | None = None) -> dict[str, Any]:
        rows = await tables.list_files(await who(request), purpose=purpose, limit=limit + 1,
                                       after=after, newest_first=order == "desc")
        return list_page([file_object(row) for row in rows[:limit]], len(rows) > limit)

    @router.get("/{file_id}", summary="A file's details")
    async def get_file(request: Request, file_id: str) -> dict[str, Any]:
        return file_object(await found(request, file_id))

    @router.get("/{file_id}/content", summary="A file's bytes")
    async def content(request: Request, file_id: str) -> Response:
        row = await found(request, file_id)
        parts = tables.file_parts(row.owner, file_id)  # streamed: one part in memory
        return StreamingResponse(parts, media_type="application/octet-stream", headers={
            "content-length": str(row.bytes),
            "content-disposition": f'attachment; filename="{_safe(row.filename)}"'})

    @router.delete("/{file_id}", summary="Delete a file")
    async def delete_file(request: Request, file_id: str) -> dict[str, Any]:
        owner = await who(request)
        if await tables.in_use(owner, file_id):
            raise ConflictError(f"File {file_id} is the input of a batch that has not "
                                "finished; cancel the batch or wait for it.",
                                param="file_id", code="file_in_use")
        if not await tables.delete_file(owner, file_id):
            raise NotFoundError(f"No such File object: {file_id}", param="file_id",
                                code="file_not_found")
        return {"id": file_id, "object": "file", "deleted": True}

    return router


def _fields(form: FormData) -> tuple[UploadFile, str, int | None]:
    """The form's file, purpose and expiry (seconds after the upload), checked."""
    unknown = sorted(set(form.keys()) - FIELDS)
    if unknown:
        raise InvalidRequestError(f"Unsupported parameter: {unknown[0]}.", param=unknown[0],
                                  code="unsupported_parameter")
    upload, purpose = form.get("file"), form.get("purpose")
    if not isinstance(upload, UploadFile):
        raise InvalidRequestError("The 'file' field (a file) is required.", param="file")
    if purpose not in PURPOSES:
        raise InvalidRequestError(f"purpose must be one of {', '.join(PURPOSES)}.",
                                  param="purpose", code="invalid_purpose")
    expires_in = _expiry(form.get("expires_after[anchor]"), form.get("expires_after[seconds]"))
    if not upload.size:
        raise InvalidRequestError("The file is empty.", param="file", code="empty_file")
    return upload, str(purpose), expires_in


async def _pieces(upload: UploadFile) -> AsyncIterator[bytes]:
    """The uploaded file's bytes from its start, a stored part at a time."""
    await upload.seek(0)
    while piece := await upload.read(PART):
        yield piece


def _expiry(anchor: Any, seconds: Any) -> int | None:
    """The seconds after its upload that a file with this ``expires_after`` expires
    (None: it does not); the form's fields are text."""
    if anchor is None and seconds is None:
        return None
    number = int(seconds) if isinstance(seconds, str) and seconds.isdigit() else seconds
    return checked_expiry({"anchor": anchor, "seconds": number}, "expires_after")


def _safe(filename: str) -> str:
    """A filename fit for a quoted header parameter."""
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                   for c in filename)[:200]

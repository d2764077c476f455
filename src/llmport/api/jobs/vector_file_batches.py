"""``/v1/vector_stores/{id}/file_batches``: many files added to a store at once.

A batch is the list of its files' ids. Each file joins the store as if added alone
(queued for the indexer; one the store holds already is left as it is), and the
batch's counts and status are those files' statuses. Cancelling a batch cancels
those of its files not indexed yet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Query, Request

from llmport.api.jobs.caller import owner_of
from llmport.api.jobs.params import list_page, unknown_fields
from llmport.api.jobs.vector_shapes import file_batch_object, file_object, new_store_file
from llmport.db.job_models import VectorStore, VectorStoreFileBatch
from llmport.db.jobs import JobTables, now
from llmport.db.rag import RagTables, new_file_batch_id
from llmport.errors import InvalidRequestError, NotFoundError
from llmport.gateway.context import CallContext

MAX_FILES = 2000  # per batch, as OpenAI's API allows

Who = Callable[[Request, bool], Awaitable[tuple[CallContext, dict[str, Any]]]]
Found = Callable[[CallContext, str], Awaitable[VectorStore]]


def file_batch_routes(router: APIRouter, tables: RagTables, files: JobTables, who: Who,
                      found: Found, wake: Callable[[], None]) -> None:
    """Add the file batch routes to the vector stores' router (its ``who`` and ``found``)."""

    async def rendered(batch: VectorStoreFileBatch) -> dict[str, Any]:
        return file_batch_object(batch, await tables.file_batch_counts(batch))

    async def found_batch(request: Request, store_id: str, batch_id: str
                          ) -> VectorStoreFileBatch:
        ctx, _ = await who(request, False)  # a cancel's POST has no body
        await found(ctx, store_id)
        batch = await tables.get_file_batch(store_id, batch_id)
        if batch is None:
            raise NotFoundError(f"No file batch {batch_id} in vector store {store_id}.",
                                param="batch_id", code="file_batch_not_found")
        return batch

    @router.post("/{store_id}/file_batches", summary="Add many files to a vector store")
    async def create(request: Request, store_id: str) -> dict[str, Any]:
        ctx, body = await who(request, True)
        await found(ctx, store_id)
        unknown_fields(body, {"file_ids", "files", "attributes", "chunking_strategy"})
        wanted = _wanted(body)
        stored = await files.get_files(owner_of(ctx.principal), list(wanted))
        missing = next((file_id for file_id in wanted if file_id not in stored), None)
        if missing is not None:
            raise NotFoundError(f"No such File object: {missing}",
                                param="files" if "files" in body else "file_ids",
                                code="file_not_found")
        rows = [new_store_file(ctx.principal, store_id, stored[file_id], chunking, attributes)
                for file_id, (chunking, attributes) in wanted.items()]
        batch = VectorStoreFileBatch(id=new_file_batch_id(), vector_store_id=store_id,
                                     file_ids=list(wanted), created_at=now(), cancelled_at=None)
        await tables.create_file_batch(batch, rows)
        wake()
        return await rendered(batch)

    @router.get("/{store_id}/file_batches/{batch_id}", summary="A vector store file batch")
    async def get(request: Request, store_id: str, batch_id: str) -> dict[str, Any]:
        return await rendered(await found_batch(request, store_id, batch_id))

    @router.post("/{store_id}/file_batches/{batch_id}/cancel",
                 summary="Cancel the files of a batch not indexed yet")
    async def cancel(request: Request, store_id: str, batch_id: str) -> dict[str, Any]:
        batch = await found_batch(request, store_id, batch_id)
        await tables.cancel_file_batch(batch)
        return await rendered(await tables.get_file_batch(store_id, batch_id) or batch)

    @router.get("/{store_id}/file_batches/{batch_id}/files", summary="A file batch's files")
    async def list_files(request: Request, store_id: str, batch_id: str,
                         limit: int = Query(20, ge=1, le=100),
                         order: str = Query("desc", pattern="^(asc|desc)$"),
                         after: str | None = None,
                         filter: str | None = Query(
                             None, pattern="^(in_progress|completed|failed|cancelled)$"),
                         ) -> dict[str, Any]:
        batch = await found_batch(request, store_id, batch_id)
        rows = await tables.list_files(store_id, limit=limit + 1, after=after,
                                       newest_first=order == "desc", status=filter,
                                       file_ids=batch.file_ids)
        return list_page([file_object(row) for row in rows[:limit]], len(rows) > limit)


def _wanted(body: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """file id → (its chunking strategy, its attributes), in the order given, each once:
    ``file_ids`` with the batch's ``chunking_strategy`` and ``attributes``, or ``files``
    with each file's own."""
    if ("file_ids" in body) == ("files" in body):
        raise InvalidRequestError("Give either file_ids or files (not both).",
                                  param="file_ids")
    param = "file_ids" if "file_ids" in body else "files"
    given = body[param]
    if not isinstance(given, list) or not 1 <= len(given) <= MAX_FILES:
        raise InvalidRequestError(f"{param} must be a list of 1 to {MAX_FILES} items.",
                                  param=param)
    wanted: dict[str, tuple[Any, Any]] = {}
    if param == "file_ids":
        if not all(isinstance(file_id, str) for file_id in given):
            raise InvalidRequestError("file_ids must be a list of file ids.", param=param)
        for file_id in given:
            wanted.setdefault(file_id, (body.get("chunking_strategy"), body.get("attributes")))
        return wanted
    if "attributes" in body or "chunking_strategy" in body:
        raise InvalidRequestError("With files, give attributes and chunking_strategy per "
                                  "file, not for the batch.", param="files")
    for item in given:
        if not (isinstance(item, dict) and isinstance(item.get("file_id"), str)):
            raise InvalidRequestError("Each of files must be an object with a file_id.",
                                      param=param)
        unknown_fields(item, {"file_id", "attributes", "chunking_strategy"})
        wanted.setdefault(item["file_id"], (item.get("chunking_strategy"),
                                            item.get("attributes")))
    return wanted

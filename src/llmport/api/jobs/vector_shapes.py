"""The vector store objects as OpenAI's API shows them, and their parameters' checks."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from llmport.api.internal import run_as
from llmport.api.jobs.params import STORE_EXPIRY_DAYS, checked_after
from llmport.db.job_models import StoredFile, VectorStore, VectorStoreFile, VectorStoreFileBatch
from llmport.db.jobs import now
from llmport.db.rag import RagTables
from llmport.errors import InvalidRequestError
from llmport.rag.chunking import AUTO
from llmport.types import Principal

ACTIVITY_GRAIN = timedelta(minutes=1)  # a store's last_active_at is kept to the minute


def store_object(row: VectorStore, counts: dict[str, int]) -> dict[str, Any]:
    ends = expires_at(row)
    status = "expired" if ends is not None and ends <= now() else \
        "in_progress" if counts.get("in_progress") else "completed"
    shown = {
        "id": row.id, "object": "vector_store", "created_at": int(row.created_at.timestamp()),
        "name": row.name, "usage_bytes": row.usage_bytes,
        "file_counts": {**counts, "total": sum(counts.values())}, "status": status,
        "last_active_at": int(row.last_active_at.timestamp()) if row.last_active_at else None,
        "expires_at": int(ends.timestamp()) if ends is not None else None,
        "metadata": row.meta}
    if row.expires_days is not None:
        shown["expires_after"] = {"anchor": "last_active_at", "days": row.expires_days}
    return shown


def expires_at(row: VectorStore) -> datetime | None:
    """When the store expires: ``expires_after`` days after its last activity."""
    if row.expires_days is None:
        return None
    return (row.last_active_at or row.created_at) + timedelta(days=row.expires_days)


async def searchable(tables: RagTables, store: VectorStore) -> str:
    """The store's id, once it is known not to have expired (400 if it has); a search is
    activity, so it moves ``last_active_at`` on (a write at most once a minute)."""
    ends = expires_at(store)
    if ends is not None and ends <= now():
        raise InvalidRequestError(f"Vector store {store.id} has expired.",
                                  param="vector_store_id", code="vector_store_expired")
    if store.last_active_at is None or now() - store.last_active_at > ACTIVITY_GRAIN:
        await tables.mark_active(store.id)
    return store.id


def checked_store_expiry(value: Any) -> int | None:
    """The days of ``{"anchor": "last_active_at", "days": 1…365}`` (None when absent)."""
    return checked_after(value, "expires_after", "last_active_at", "days", STORE_EXPIRY_DAYS)


def file_object(row: VectorStoreFile) -> dict[str, Any]:
    return {
        "id": row.file_id, "object": "vector_store.file", "usage_bytes": row.usage_bytes,
        "created_at": int(row.created_at.timestamp()), "vector_store_id": row.vector_store_id,
        "status": row.status, "last_error": row.last_error,
        "chunking_strategy": {"type": "static", "static": {
            "max_chunk_size_tokens": row.chunk_tokens,
            "chunk_overlap_tokens": row.overlap_tokens}},
        "attributes": row.attributes or {}}


def file_batch_object(row: VectorStoreFileBatch, counts: dict[str, int]) -> dict[str, Any]:
    if counts["in_progress"]:
        status = "in_progress"
    elif row.cancelled_at is not None:
        status = "cancelled"
    elif counts["failed"] and counts["failed"] == sum(counts.values()):
        status = "failed"
    else:
        status = "completed"
    return {
        "id": row.id, "object": "vector_store.files_batch",
        "created_at": int(row.created_at.timestamp()), "vector_store_id": row.vector_store_id,
        "status": status, "file_counts": {**counts, "total": sum(counts.values())}}


def new_store_file(principal: Principal, store_id: str, stored: StoredFile, chunking: Any,
                   attributes: Any) -> VectorStoreFile:
    """A file joining a store, queued for the indexer, which runs it as ``principal``."""
    size, overlap = checked_chunking(chunking)
    return VectorStoreFile(
        vector_store_id=store_id, file_id=stored.id, filename=stored.filename,
        run_as=run_as(principal), status="in_progress", last_error=None, usage_bytes=0,
        chunk_tokens=size, overlap_tokens=overlap, attributes=checked_attributes(attributes),
        created_at=now())


def checked_chunking(strategy: Any) -> tuple[int, int]:
    """(max_chunk_size_tokens, chunk_overlap_tokens) of ``auto`` or ``static`` chunking."""
    if strategy is None or strategy == {"type": "auto"}:
        return AUTO
    static = strategy.get("static") if isinstance(strategy, dict) else None
    if not isinstance(strategy, dict) or strategy.get("type") != "static" \
            or not isinstance(static, dict):
        raise InvalidRequestError("chunking_strategy must be {\"type\": \"auto\"} or "
                                  "{\"type\": \"static\", \"static\": {...}}.",
                                  param="chunking_strategy")
    size, overlap = static.get("max_chunk_size_tokens"), static.get("chunk_overlap_tokens")
    if not (isinstance(size, int) and 100 <= size <= 4096 and isinstance(overlap, int)
            and 0 <= overlap <= size // 2):
        raise InvalidRequestError("max_chunk_size_tokens must be from 100 to 4096 and "
                                  "chunk_overlap_tokens from 0 to half of it.",
                                  param="chunking_strategy")
    return size, overlap


def checked_attributes(attributes: Any) -> dict[str, Any] | None:
    """At most 16 pairs: keys up to 64 characters, values strings (≤ 512), numbers or
    booleans."""
    if attributes is None:
        return None
    if not (isinstance(attributes, dict) and len(attributes) <= 16 and all(
            isinstance(k, str) and len(k) <= 64
            and (isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) <= 512))
            for k, v in attributes.items())):
        raise InvalidRequestError("attributes must be at most 16 pairs of a key (up to 64 "
                                  "characters) and a string (up to 512), number or boolean.",
                                  param="attributes")
    return attributes

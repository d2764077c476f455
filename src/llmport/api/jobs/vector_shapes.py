"""The vector store objects as OpenAI's API shows them, and their parameters' checks."""

from __future__ import annotations

from typing import Any

from llmport.api.internal import run_as
from llmport.db.job_models import StoredFile, VectorStore, VectorStoreFile, VectorStoreFileBatch
from llmport.db.jobs import now
from llmport.errors import InvalidRequestError
from llmport.rag.chunking import AUTO
from llmport.types import Principal


def store_object(row: VectorStore, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": row.id, "object": "vector_store", "created_at": int(row.created_at.timestamp()),
        "name": row.name, "usage_bytes": row.usage_bytes,
        "file_counts": {**counts, "total": sum(counts.values())},
        "status": "in_progress" if counts.get("in_progress") else "completed",
        "last_active_at": int(row.last_active_at.timestamp()) if row.last_active_at else None,
        "expires_at": None, "metadata": row.meta}


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

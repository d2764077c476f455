"""The tables of the jobs the gateway keeps for its callers: files (``/v1/files``), batches
and their answered lines, vector stores with their files and chunks, stored responses and
conversations. Each row names its ``owner`` (the principal that made it: only it sees the
row); rows a background worker runs carry a lease (``lease_owner``, ``lease_until``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, ForeignKeyConstraint, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from llmport.db.models import Base, JSONType, UTCDateTime, utcnow


class StoredFile(Base):
    """An uploaded file (``/v1/files``) or a batch's output; its bytes are in ``file_contents``
    (in the database, so that every replica can serve them)."""

    __tablename__ = "files"
    __table_args__ = (Index(None, "owner", "created_at"), Index(None, "expires_at"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(160))  # the principal id that may see it
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String)
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # ``expires_after``


class FileContent(Base):
    """A file's bytes in parts (``file_writer.PART``, 1 MB; 8 MB before files were written
    as they came): no row nears a database's value limit (PostgreSQL's ``bytea``: 1 GB),
    and a download streams part by part."""

    __tablename__ = "file_contents"

    file_id: Mapped[str] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Batch(Base):
    """A batch job (``/v1/batches``). ``run_as`` says whose limits and spend its requests
    count against; ``lease_owner`` and ``lease_until`` which replica runs it, until when."""

    __tablename__ = "batches"
    __table_args__ = (Index(None, "owner", "created_at"), Index(None, "status", "created_at"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(160))
    run_as: Mapped[dict[str, Any]] = mapped_column(JSONType)
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(String)
    status: Mapped[str] = mapped_column(String(16))
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    in_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finalizing_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelling_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    expired: Mapped[int] = mapped_column(Integer, default=0)  # requests never sent in time
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    output_expires_in: Mapped[int | None] = mapped_column(Integer)  # its files' expiry, seconds
    ending: Mapped[str | None] = mapped_column(String(16))  # the final status, once finalizing
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # runs that failed
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BatchItem(Base):
    """One answered line of a running batch; gathered into its output files at the end."""

    __tablename__ = "batch_items"

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    custom_id: Mapped[str] = mapped_column(String)
    status_code: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String)
    body: Mapped[bytes] = mapped_column(LargeBinary)


class VectorStore(Base):
    """A searchable collection of files' chunks (``/v1/vector_stores``). ``revision`` grows
    with every change to its chunks, so a process's cached index knows when to reload."""

    __tablename__ = "vector_stores"
    __table_args__ = (Index(None, "owner", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(160))
    name: Mapped[str] = mapped_column(String)
    embedding_model: Mapped[str] = mapped_column(String)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    usage_bytes: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_active_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_days: Mapped[int | None] = mapped_column(Integer)  # after last_active_at


class VectorStoreFile(Base):
    """A file in a vector store: chunked and embedded in the background (``rag/indexer.py``)
    as ``run_as`` — the caller that added it — under a lease like a batch's."""

    __tablename__ = "vector_store_files"
    __table_args__ = (Index(None, "status", "created_at"),)

    vector_store_id: Mapped[str] = mapped_column(
        ForeignKey("vector_stores.id", ondelete="CASCADE"), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String)
    run_as: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16))
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    usage_bytes: Mapped[int] = mapped_column(Integer, default=0)
    chunk_tokens: Mapped[int] = mapped_column(Integer)
    overlap_tokens: Mapped[int] = mapped_column(Integer)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # indexing runs that failed
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


class VectorStoreFileBatch(Base):
    """Files added to a store together (``/file_batches``): the batch keeps their ids, and
    its counts are those files' statuses in the store."""

    __tablename__ = "vector_store_file_batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vector_store_id: Mapped[str] = mapped_column(
        ForeignKey("vector_stores.id", ondelete="CASCADE"), index=True)
    file_ids: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class VectorChunk(Base):
    """One chunk of a file's text and its embedding (float32, unit length)."""

    __tablename__ = "vector_chunks"
    __table_args__ = (ForeignKeyConstraint(
        ["vector_store_id", "file_id"],
        ["vector_store_files.vector_store_id", "vector_store_files.file_id"],
        ondelete="CASCADE"),)

    vector_store_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)


class StoredResponse(Base):
    """A ``/v1/responses`` answer kept for ``previous_response_id`` and ``GET``.

    ``history`` is the chat messages this response adds to the one it continues
    (``previous_id``), or, with no ``previous_id``, its whole conversation: a chain of
    responses stores each turn once (``ResponseTables``).
    """

    __tablename__ = "responses"
    __table_args__ = (Index(None, "owner", "created_at"), Index(None, "previous_id"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    body: Mapped[dict[str, Any]] = mapped_column(JSONType)
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    previous_id: Mapped[str | None] = mapped_column(String(64))


class Conversation(Base):
    """A conversation (``/v1/conversations``): its items, continued by responses.
    ``next_position`` hands out item positions (one ``UPDATE`` serialises appends)."""

    __tablename__ = "conversations"
    __table_args__ = (Index(None, "owner", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    next_position: Mapped[int] = mapped_column(Integer, default=0)


class ConversationItem(Base):
    __tablename__ = "conversation_items"
    __table_args__ = (Index(None, "conversation_id", "item_id"),)

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[dict[str, Any]] = mapped_column(JSONType)

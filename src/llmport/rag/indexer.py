"""``Indexer``: chunks and embeds the files added to vector stores, in the background.

One file at a time per replica, leased like a batch (``rag.lease_seconds``, renewed while
it runs, so a dead replica's file is taken over). The text is chunked
(``rag/chunking.py``) and embedded through the gateway as the caller that added the file
(``run_as``: their limits and spend), then stored with the file's final status in one
transaction. A file that is not UTF-8 text fails with ``unsupported_file``; a failed
embeddings request fails the file with its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import TYPE_CHECKING

import structlog

from llmport.batches.input import off_loop
from llmport.db.job_models import VectorChunk, VectorStoreFile
from llmport.db.jobs import JobTables
from llmport.db.rag import RagTables
from llmport.rag.chunking import chunk
from llmport.rag.embeddings import EmbeddingFailed, embed
from llmport.rag.settings import RagConfig

if TYPE_CHECKING:
    from llmport.gateway.gateway import Gateway

log = structlog.get_logger("llmport.rag")
MAX_ATTEMPTS = 3  # indexing runs of a file that may fail before it fails
RETRY_AFTER_S = 30.0  # a failed run's file waits this long times its failures
EMBED_PATIENCE_S = 600.0  # how long refusals by limits (429, 503) are waited out


class Indexer:
    def __init__(self, gateway: Gateway, tables: RagTables, files: JobTables,
                 config: RagConfig) -> None:
        self.gateway = gateway
        self.tables = tables
        self.files = files
        self.config = config
        self.id = f"indexer_{secrets.token_hex(8)}"
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="llmport-indexer")

    def wake(self) -> None:
        self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            row = None
            try:
                row = await self.tables.claim_file(self.id, self.config.lease_seconds)
                if row is not None:
                    await self._index(row)
                    continue
            except asyncio.CancelledError:
                if row is not None:  # hand it over now, not when the lease runs out
                    await asyncio.shield(self.tables.release(row, self.id))
                raise
            except Exception as exc:  # a database outage, a bug: held back, tried again
                log.exception("indexing failed", file_id=getattr(row, "file_id", None))
                if row is not None:
                    await asyncio.shield(self._failed(row, exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)

    async def _failed(self, row: VectorStoreFile, exc: Exception) -> None:
        """A run failed: tried again later (each embedding is paid for), failed for good
        after ``MAX_ATTEMPTS``."""
        try:
            attempts = (row.attempts or 0) + 1
            if attempts < MAX_ATTEMPTS:
                await self.tables.hold(row, self.id, attempts, RETRY_AFTER_S * attempts)
            else:
                await self._fail(row, "server_error", f"Indexing failed {attempts} times "
                                 f"({type(exc).__name__}: {exc})."[:500])
        except Exception:  # the lease runs out by itself
            log.exception("recording a failed indexing run failed", file_id=row.file_id)

    async def _index(self, row: VectorStoreFile) -> None:
        store = await self.tables.get_store(None, row.vector_store_id)
        if store is None:
            return  # the store was deleted meanwhile (its files with it)
        data = await self.files.file_data(store.owner, row.file_id)
        if data is None:
            await self._fail(row, "invalid_file", "The file no longer exists.")
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            await self._fail(row, "unsupported_file", "Only UTF-8 text files can be searched "
                             "(text, Markdown, HTML, CSV, JSON, code).")
            return
        pieces = await off_loop(len(data), chunk, text, row.chunk_tokens, row.overlap_tokens)
        if not pieces:
            await self._fail(row, "invalid_file", "The file has no text.")
            return
        renewing = asyncio.create_task(self._renew(row))
        try:
            vectors = await embed(self.gateway, store.embedding_model, pieces, row.run_as,
                                  self.config.embed_batch, patience=EMBED_PATIENCE_S)
        except EmbeddingFailed as exc:
            await self._fail(row, "server_error", f"Embedding failed ({exc.status}): {exc}")
            return
        finally:
            renewing.cancel()
        chunks = [VectorChunk(vector_store_id=row.vector_store_id, file_id=row.file_id,
                              position=i, text=piece, embedding=vectors[i].tobytes())
                  for i, piece in enumerate(pieces)]
        if await self.tables.finish_file(row, self.id, chunks, None, len(data)):
            log.info("file indexed", vector_store_id=row.vector_store_id,
                     file_id=row.file_id, chunks=len(chunks))

    async def _fail(self, row: VectorStoreFile, code: str, message: str) -> None:
        await self.tables.finish_file(row, self.id, [], {"code": code, "message": message}, 0)

    async def _renew(self, row: VectorStoreFile) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                await self.tables.renew(row, self.id, self.config.lease_seconds)
            except Exception:  # the database is away: try again; storing checks the lease
                log.exception("renewing an indexing lease failed", file_id=row.file_id)


"""``Jobs``: the files, batches and vector store routes and their background workers, built
from the config (they keep everything in the database, so none without one), and the
vector stores' search for the Responses API's ``file_search`` tool."""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from fastapi import APIRouter

from llmport.api.anthropic.batches import message_batches_router
from llmport.api.jobs.batches import batches_router
from llmport.api.jobs.files import files_router
from llmport.api.jobs.vector_stores import vector_stores_router
from llmport.api.responses.file_search import FileSearch
from llmport.batches.runner import BatchRunner
from llmport.db.jobs import JobTables
from llmport.db.rag import RagTables
from llmport.gateway.gateway import Gateway
from llmport.rag.index import SearchIndex
from llmport.rag.indexer import Indexer

log = structlog.get_logger("llmport.jobs")
PURGE_EVERY = 300.0  # seconds between deletions of expired files


class Jobs:
    def __init__(self, gateway: Gateway) -> None:
        config = gateway.config
        self.routers: list[APIRouter] = []
        self.runner: BatchRunner | None = None
        self.indexer: Indexer | None = None
        self.file_search: FileSearch | None = None  # the Responses API's file_search tool
        self.files: JobTables | None = None
        self.stores: RagTables | None = None
        self._purging: asyncio.Task[None] | None = None
        if gateway.db is None or not (config.batches.enabled or config.rag.enabled):
            return
        files = self.files = JobTables(gateway.db.sessions)
        self.routers.append(files_router(gateway, files, config.batches))
        if config.batches.enabled:
            self.runner = BatchRunner(gateway, files, config.batches)
            self.routers.append(batches_router(gateway, files, self.runner))
            self.routers.append(message_batches_router(gateway, files, self.runner,
                                                       config.batches))
        if config.rag.enabled:
            tables = self.stores = RagTables(gateway.db.sessions)
            self.indexer = Indexer(gateway, tables, files, config.rag)
            index = SearchIndex(tables, config.rag.cached_stores,
                                int(config.rag.cached_mb * 1024 * 1024))
            self.routers.append(vector_stores_router(gateway, tables, files, index, config.rag,
                                                     self.indexer.wake))
            self.file_search = FileSearch(gateway, tables, index, config.rag)

    def start(self) -> None:
        for worker in (self.runner, self.indexer):
            if worker is not None:
                worker.start()
        if self.files is not None:
            self._purging = asyncio.create_task(self._purge_expired(self.files, self.stores))

    async def aclose(self) -> None:
        if self._purging is not None:
            self._purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purging
        for worker in (self.runner, self.indexer):
            if worker is not None:
                await worker.aclose()

    @staticmethod
    async def _purge_expired(files: JobTables, stores: RagTables | None) -> None:
        """Delete expired files and vector stores (``expires_after``) now and every
        ``PURGE_EVERY`` seconds; their owners no longer see them (files) or use them
        (stores) from the moment they expire."""
        while True:
            try:
                removed = await files.purge_expired()
                gone = await stores.purge_expired_stores() if stores is not None else 0
                if removed or gone:
                    log.info("expired files and vector stores deleted", files=removed,
                             vector_stores=gone)
            except Exception as exc:  # the next round tries again
                log.warning("deleting expired files failed", error=str(exc))
            await asyncio.sleep(PURGE_EVERY)

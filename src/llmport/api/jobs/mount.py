"""``Jobs``: the files, batches and vector store routes and their background workers, built
from the config (they keep everything in the database, so none without one), and the
vector stores' search for the Responses API's ``file_search`` tool."""

from __future__ import annotations

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


class Jobs:
    def __init__(self, gateway: Gateway) -> None:
        config = gateway.config
        self.routers: list[APIRouter] = []
        self.runner: BatchRunner | None = None
        self.indexer: Indexer | None = None
        self.file_search: FileSearch | None = None  # the Responses API's file_search tool
        if gateway.db is None or not (config.batches.enabled or config.rag.enabled):
            return
        files = JobTables(gateway.db.sessions)
        self.routers.append(files_router(gateway, files, config.batches))
        if config.batches.enabled:
            self.runner = BatchRunner(gateway, files, config.batches)
            self.routers.append(batches_router(gateway, files, self.runner))
            self.routers.append(message_batches_router(gateway, files, self.runner,
                                                       config.batches))
        if config.rag.enabled:
            tables = RagTables(gateway.db.sessions)
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

    async def aclose(self) -> None:
        for worker in (self.runner, self.indexer):
            if worker is not None:
                await worker.aclose()

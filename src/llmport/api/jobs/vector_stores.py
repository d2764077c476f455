"""``/v1/vector_stores``: OpenAI's Vector Stores API — stores, their files, search.

A store belongs to the principal that made it and holds files that principal uploaded;
adding a file queues it for the indexer (``in_progress`` until it is chunked and
embedded). Search embeds the query through the gateway as the caller and ranks the
store's chunks by cosine similarity (``rag/index.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Query, Request

from llmport.api.jobs.caller import JSON_LIMIT, caller, owner_of, signed_body
from llmport.api.jobs.params import checked_metadata, list_page, unknown_fields
from llmport.api.jobs.vector_file_batches import file_batch_routes
from llmport.api.jobs.vector_shapes import (
    checked_attributes,
    checked_chunking,
    checked_store_expiry,
    file_object,
    new_store_file,
    searchable,
    store_object,
)
from llmport.api.openai.validation import parse_json_object
from llmport.db.job_models import VectorStore, VectorStoreFile
from llmport.db.jobs import JobTables, now
from llmport.db.rag import RagTables, new_store_id
from llmport.errors import InvalidRequestError, NotFoundError
from llmport.gateway.context import CallContext
from llmport.gateway.gateway import Gateway
from llmport.rag.embeddings import EmbeddingFailed, embed, embedding_error
from llmport.rag.filters import compile_filter
from llmport.rag.index import SearchIndex
from llmport.rag.settings import RagConfig
from llmport.types import Endpoint


def embedding_model(gateway: Gateway, config: RagConfig) -> str | None:
    """``rag.embedding_model``, else the first configured model that serves embeddings."""
    if config.embedding_model is not None:
        return config.embedding_model
    return next((d.config.name for d in gateway.router.deployments
                 if d.provider.supports(Endpoint.EMBEDDINGS)), None)


def vector_stores_router(gateway: Gateway, tables: RagTables, files: JobTables,
                         index: SearchIndex, config: RagConfig,
                         wake: Callable[[], None]) -> APIRouter:
    router = APIRouter(prefix="/v1/vector_stores", tags=["vector stores"])

    async def who(request: Request, parse: bool = True) -> tuple[CallContext, dict[str, Any]]:
        """The caller, and the JSON body of a POST ({} for other methods, and for a POST
        that takes none: ``parse`` False)."""
        ctx = await caller(gateway, request)
        raw = await signed_body(gateway, request, ctx, JSON_LIMIT)
        return ctx, (parse_json_object(raw) if parse and request.method == "POST" else {})

    async def found(ctx: CallContext, store_id: str) -> VectorStore:
        store = await tables.get_store(owner_of(ctx.principal), store_id)
        if store is None:
            raise NotFoundError(f"No such vector store: {store_id}", param="vector_store_id",
                                code="vector_store_not_found")
        return store

    async def rendered(stores: list[VectorStore]) -> list[dict[str, Any]]:
        """The stores with their file counts. Counted first, then the rows read again: a
        file finishing in between then shows as in progress (and the client looks again),
        never as completed beside the store's usage before it."""
        counts = await tables.file_counts([s.id for s in stores])
        fresh = [await tables.get_store(None, s.id) or s for s in stores]
        return [store_object(s, counts[s.id]) for s in fresh]

    async def new_file(ctx: CallContext, store_id: str, file_id: Any, chunking: Any,
                       attributes: Any, param: str) -> VectorStoreFile:
        stored = await files.get_file(owner_of(ctx.principal), file_id) \
            if isinstance(file_id, str) else None
        if stored is None:
            raise NotFoundError(f"No such File object: {file_id}", param=param,
                                code="file_not_found")
        return new_store_file(ctx.principal, store_id, stored, chunking, attributes)

    @router.post("", summary="Create a vector store (optionally with files)")
    async def create(request: Request) -> dict[str, Any]:
        ctx, body = await who(request)
        unknown_fields(body, {"name", "file_ids", "chunking_strategy", "metadata",
                              "expires_after"})
        model = embedding_model(gateway, config)
        if model is None:
            raise InvalidRequestError("No model of this gateway serves embeddings: configure "
                                      "one and rag.embedding_model.",
                                      code="embedding_model_unavailable")
        checked_chunking(body.get("chunking_strategy"))  # refused even with no files
        file_ids = body.get("file_ids") or []
        if not isinstance(file_ids, list) or len(file_ids) > 500:
            raise InvalidRequestError("file_ids must be a list of at most 500 file ids.",
                                      param="file_ids")
        store = VectorStore(id=new_store_id(), owner=owner_of(ctx.principal),
                            name=str(body.get("name") or ""), embedding_model=model,
                            revision=0, usage_bytes=0, created_at=now(),
                            meta=checked_metadata(body.get("metadata")), last_active_at=now(),
                            expires_days=checked_store_expiry(body.get("expires_after")))
        added = [await new_file(ctx, store.id, file_id, body.get("chunking_strategy"), None,
                                "file_ids") for file_id in dict.fromkeys(file_ids)]
        await tables.create_store(store, added)
        if added:
            wake()
        return (await rendered([store]))[0]

    @router.get("", summary="List your vector stores")
    async def list_stores(request: Request, limit: int = Query(20, ge=1, le=100),
                          order: str = Query("desc", pattern="^(asc|desc)$"),
                          after: str | None = None) -> dict[str, Any]:
        ctx, _ = await who(request)
        rows = await tables.list_stores(owner_of(ctx.principal), limit=limit + 1, after=after,
                                        newest_first=order == "desc")
        return list_page(await rendered(rows[:limit]), len(rows) > limit)

    @router.get("/{store_id}", summary="A vector store")
    async def get_store(request: Request, store_id: str) -> dict[str, Any]:
        ctx, _ = await who(request)
        return (await rendered([await found(ctx, store_id)]))[0]

    @router.post("/{store_id}", summary="Rename a vector store or change its metadata")
    async def modify(request: Request, store_id: str) -> dict[str, Any]:
        ctx, body = await who(request)
        await found(ctx, store_id)
        unknown_fields(body, {"name", "metadata", "expires_after"})
        fields: dict[str, Any] = {}
        if body.get("name") is not None:
            fields["name"] = str(body["name"])
        if "metadata" in body:
            fields["meta"] = checked_metadata(body["metadata"])
        if "expires_after" in body:  # null: it no longer expires
            fields["expires_days"] = checked_store_expiry(body["expires_after"])
        if fields:
            await tables.update_store(owner_of(ctx.principal), store_id, fields)
        return (await rendered([await found(ctx, store_id)]))[0]

    @router.delete("/{store_id}", summary="Delete a vector store (not its files)")
    async def delete(request: Request, store_id: str) -> dict[str, Any]:
        ctx, _ = await who(request)
        if not await tables.delete_store(owner_of(ctx.principal), store_id):
            raise NotFoundError(f"No such vector store: {store_id}", param="vector_store_id",
                                code="vector_store_not_found")
        return {"id": store_id, "object": "vector_store.deleted", "deleted": True}

    @router.post("/{store_id}/files", summary="Add a file to a vector store")
    async def add_file(request: Request, store_id: str) -> dict[str, Any]:
        ctx, body = await who(request)
        await found(ctx, store_id)
        unknown_fields(body, {"file_id", "chunking_strategy", "attributes"})
        row = await new_file(ctx, store_id, body.get("file_id"), body.get("chunking_strategy"),
                             body.get("attributes"), "file_id")
        added = await tables.add_file(row)
        if added is None:  # there already: as it is
            existing = await tables.get_file(store_id, row.file_id)
            assert existing is not None
            return file_object(existing)
        wake()
        return file_object(added)

    @router.get("/{store_id}/files", summary="A vector store's files")
    async def list_files(request: Request, store_id: str,
                         limit: int = Query(20, ge=1, le=100),
                         order: str = Query("desc", pattern="^(asc|desc)$"),
                         after: str | None = None,
                         filter: str | None = Query(
                             None, pattern="^(in_progress|completed|failed|cancelled)$"),
                         ) -> dict[str, Any]:
        ctx, _ = await who(request)
        await found(ctx, store_id)
        rows = await tables.list_files(store_id, limit=limit + 1, after=after,
                                       newest_first=order == "desc", status=filter)
        return list_page([file_object(r) for r in rows[:limit]], len(rows) > limit)

    async def found_file(request: Request, store_id: str, file_id: str
                         ) -> tuple[CallContext, dict[str, Any], VectorStoreFile]:
        ctx, body = await who(request)
        await found(ctx, store_id)
        row = await tables.get_file(store_id, file_id)
        if row is None:
            raise NotFoundError(f"No file {file_id} in vector store {store_id}.",
                                param="file_id", code="file_not_found")
        return ctx, body, row

    @router.get("/{store_id}/files/{file_id}", summary="A vector store file")
    async def get_file(request: Request, store_id: str, file_id: str) -> dict[str, Any]:
        return file_object((await found_file(request, store_id, file_id))[2])

    @router.post("/{store_id}/files/{file_id}", summary="Change a vector store file's attributes")
    async def update_file(request: Request, store_id: str, file_id: str) -> dict[str, Any]:
        _, body, row = await found_file(request, store_id, file_id)
        unknown_fields(body, {"attributes"})
        await tables.set_attributes(store_id, file_id, checked_attributes(body.get("attributes")))
        return file_object(await tables.get_file(store_id, file_id) or row)

    @router.delete("/{store_id}/files/{file_id}", summary="Remove a file from a vector store")
    async def remove_file(request: Request, store_id: str, file_id: str) -> dict[str, Any]:
        await found_file(request, store_id, file_id)
        await tables.remove_file(store_id, file_id)
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    @router.get("/{store_id}/files/{file_id}/content", summary="A file's chunks, as indexed")
    async def content(request: Request, store_id: str, file_id: str) -> dict[str, Any]:
        await found_file(request, store_id, file_id)
        texts = await tables.file_texts(store_id, file_id)
        return {"object": "vector_store.file_content.page", "has_more": False,
                "next_page": None, "data": [{"type": "text", "text": text} for text in texts]}

    file_batch_routes(router, tables, files, who, found, wake)

    @router.post("/{store_id}/search", summary="Search a vector store by meaning")
    async def search(request: Request, store_id: str) -> dict[str, Any]:
        ctx, body = await who(request)
        store = await found(ctx, store_id)
        return await _search(gateway, tables, index, config, ctx, store, body)

    return router


async def _search(gateway: Gateway, tables: RagTables, index: SearchIndex, config: RagConfig,
                  ctx: CallContext, store: VectorStore, body: dict[str, Any]) -> dict[str, Any]:
    unknown_fields(body, {"query", "max_num_results", "filters", "ranking_options",
                          "rewrite_query"})
    query = body.get("query")
    queries = [query] if isinstance(query, str) else query
    if not isinstance(queries, list) or not queries or not all(
            isinstance(q, str) and q.strip() for q in queries):
        raise InvalidRequestError("query must be a non-empty string or list of strings.",
                                  param="query")
    if body.get("rewrite_query"):
        raise InvalidRequestError("rewrite_query is not supported.", param="rewrite_query",
                                  code="unsupported_parameter")
    limit = body.get("max_num_results", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 50:
        raise InvalidRequestError("max_num_results must be an integer from 1 to 50.",
                                  param="max_num_results")
    ranking = body.get("ranking_options") or {}
    threshold = ranking.get("score_threshold", 0) if isinstance(ranking, dict) else None
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise InvalidRequestError("ranking_options.score_threshold must be from 0 to 1.",
                                  param="ranking_options")
    accept = compile_filter(body["filters"]) if body.get("filters") is not None else None
    store_id = await searchable(tables, store)  # before anything is spent on the query
    try:
        vectors = await embed(gateway, store.embedding_model, queries, ctx.principal,
                              config.embed_batch)
    except EmbeddingFailed as exc:
        raise embedding_error(exc) from None
    hits = await index.search(store_id, vectors, limit, float(threshold), accept)
    return {"object": "vector_store.search_results.page", "search_query": queries,
            "has_more": False, "next_page": None,
            "data": [{"file_id": h.file_id, "filename": h.filename, "score": h.score,
                      "attributes": h.attributes, "content": [{"type": "text", "text": h.text}]}
                     for h in hits]}

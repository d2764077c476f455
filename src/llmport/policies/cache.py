"""Exact response cache: the same request from the same scope gets the stored answer.

Opt-in (``cache.enabled``). The key is a hash of the scope (the caller's key,
their organisation, or everyone), the endpoint, the model and the request
body without the fields that do not change the answer (``user``,
``metadata``, ``stream_options``). Streams are cached as their chunks and
replayed as a stream. A client can skip the lookup with
``Cache-Control: no-cache`` and keep an answer out with ``no-store``. A hit
is not billed: its usage counts as zero for accounting, while the client sees
the original response.

Answers are kept serialised, in this process (an LRU) or, with a shared store (Redis),
in the store, where every replica finds what any one of them kept. Each hit is a fresh
copy, so what a policy outside the cache changes in an answer it serves (guardrails
redact, for one) never changes what is kept.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field

from llmport.gateway.context import CallContext
from llmport.gateway.pipeline import Handler
from llmport.observability.events import CacheLookup, EventBus
from llmport.policies.semantic_cache import (
    Embed,
    SemanticCacheConfig,
    SemanticIndex,
    conversation,
)
from llmport.stores.base import StateStore
from llmport.types import Chunk, JSONResult, Result, StreamResult, Usage

log = structlog.get_logger("llmport.cache")

IGNORED_FIELDS = frozenset({"user", "metadata", "stream_options", "store"})
Meaning = tuple[str, Any]  # a request's semantic partition and unit vector


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    ttl: float = Field(default=300.0, gt=0, description="seconds an answer is kept")
    max_entries: int = Field(default=10_000, ge=1)
    scope: Literal["key", "org", "global"] = Field(default="key", description=(
        "who shares answers: the same API key, the same organisation, or everyone"))
    backend: Literal["auto", "memory", "store"] = Field(default="auto", description=(
        "where answers are kept: this process, or the shared store (Redis) that every "
        "replica reads; auto: the shared store when there is one"))
    semantic: SemanticCacheConfig = SemanticCacheConfig()


class MemoryCache:
    """An LRU of serialised answers with a time to live, in this process."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class StoreCache:
    """Serialised answers in the shared store, under ``cache:``, expiring after ``ttl``.

    Its size is bounded by the time to live and the store's own memory policy, not by
    ``max_entries``. A store that cannot be reached is a miss, and an answer it cannot
    keep is not kept: the cache never fails a request.
    """

    def __init__(self, store: StateStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl

    async def get(self, key: str) -> bytes | None:
        try:
            return await self.store.get_value("cache:" + key)
        except Exception as exc:  # any store failure is a miss
            log.warning("response cache unavailable", error=str(exc))
            return None

    async def put(self, key: str, value: bytes) -> None:
        try:
            await self.store.set_value("cache:" + key, value, self.ttl)
        except Exception as exc:  # the answer is simply not kept
            log.warning("response cache unavailable", error=str(exc))


class CachePolicy:
    def __init__(self, config: CacheConfig, events: EventBus, store: StateStore,
                 embed: Embed | None = None) -> None:
        self.config = config
        shared = config.backend == "store" or (config.backend == "auto" and store.shared)
        self.store: MemoryCache | StoreCache = (
            StoreCache(store, config.ttl) if shared
            else MemoryCache(config.max_entries, config.ttl))
        self.events = events
        self.embed = embed
        self.semantic: SemanticIndex | None = None
        if config.semantic.enabled:
            try:
                self.semantic = SemanticIndex(config.semantic.max_entries, config.ttl)
            except ImportError:
                raise RuntimeError("cache.semantic needs numpy: pip install numpy") from None

    async def __call__(self, ctx: CallContext, call_next: Handler) -> Result:
        control = (ctx.header(b"cache-control") or b"").lower()
        key = self._key(ctx)
        meaning: Meaning | None = None
        if b"no-cache" not in control:
            stored = await self.store.get(key)
            found = b"hit"
            if stored is None and self.semantic is not None:
                meaning = await self._meaning(ctx)
                stored, found = await self._nearest(meaning)
            self._emit(ctx, stored is not None)
            if stored is not None:
                ctx.state["cache"] = "hit"
                ctx.usage = Usage()  # served from the cache: nothing to bill
                ctx.response_headers.append((b"x-llmport-cache", found))
                if ctx.stream:
                    return StreamResult(_replay(orjson.loads(stored)))
                return JSONResult(orjson.loads(stored))
        result = await call_next(ctx)
        if b"no-store" in control:
            return result
        if isinstance(result, JSONResult):
            if result.status == 200:
                await self.store.put(key, result.raw if result.raw is not None
                                     else orjson.dumps(result.data))
                await self._index(ctx, key, meaning)
            return result
        return StreamResult(self._keep(ctx, key, meaning, result.chunks), close=result.close)

    async def _meaning(self, ctx: CallContext) -> Meaning | None:
        """The request's partition and unit vector, or None (not served, or no embedding)."""
        assert self.semantic is not None and self.embed is not None
        found = conversation(ctx, IGNORED_FIELDS, self._scope(ctx),
                             self.config.semantic.max_chars)
        if found is None:
            return None
        partition, text = found
        model = self.config.semantic.embedding_model or ""
        try:
            vector = await self.embed(model, text)
        except Exception as exc:  # no embedding: exact matches only, for this request
            log.warning("semantic cache: embedding failed", model=model, error=str(exc))
            return None
        return partition, self.semantic.unit(vector)

    async def _nearest(self, meaning: Meaning | None) -> tuple[bytes | None, bytes]:
        """A kept answer to a question near enough, and the header value saying so."""
        assert self.semantic is not None
        near = None if meaning is None else self.semantic.nearest(*meaning)
        if near is None or near[1] < self.config.semantic.threshold:
            return None, b""
        stored = await self.store.get(near[0])
        return stored, b"semantic; similarity=%.4f" % near[1]

    async def _index(self, ctx: CallContext, key: str, meaning: Meaning | None) -> None:
        if self.semantic is None:
            return
        if meaning is None and (b"no-cache" in (ctx.header(b"cache-control") or b"").lower()):
            meaning = await self._meaning(ctx)  # the lookup was skipped: embed it now
        if meaning is not None:
            self.semantic.add(meaning[0], key, meaning[1])

    def _scope(self, ctx: CallContext) -> str:
        """Who may share this request's answers (``cache.scope``)."""
        principal = ctx.principal
        return {"key": principal.id, "org": principal.org_id or principal.id,
                "global": ""}[self.config.scope]

    def _key(self, ctx: CallContext) -> str:
        body = {k: v for k, v in ctx.body.items() if k not in IGNORED_FIELDS}
        material = orjson.dumps([self._scope(ctx), ctx.endpoint.value, ctx.model, body],
                                option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(material).hexdigest()

    async def _keep(self, ctx: CallContext, key: str, meaning: Meaning | None,
                    chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """Relay a stream, storing it only if it ends normally."""
        kept: list[bytes] = []  # each chunk as it was when relayed (later wrappers may edit it)
        try:
            async for chunk in chunks:
                kept.append(orjson.dumps(chunk.data))
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        await self.store.put(key, b"[" + b",".join(kept) + b"]")
        await self._index(ctx, key, meaning)

    def _emit(self, ctx: CallContext, hit: bool) -> None:
        if self.events.wants(CacheLookup):
            self.events.emit(CacheLookup(ctx.request_id, ctx.model, hit))


async def _replay(stored: list[dict[str, Any]]) -> AsyncIterator[Chunk]:
    for data in stored:  # parsed for this hit alone: later wrappers may edit it
        yield Chunk(data)

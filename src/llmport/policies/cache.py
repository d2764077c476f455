"""Exact response cache: the same request from the same scope gets the stored answer.

Opt-in (``cache.enabled``). The key is a hash of the scope (the caller's key,
their organisation, or everyone), the endpoint, the model and the request
body without the fields that do not change the answer (``user``,
``metadata``, ``stream_options``). Streams are cached as their chunks and
replayed as a stream. A client can skip the lookup with
``Cache-Control: no-cache`` and keep an answer out with ``no-store``. A hit
is not billed: its usage counts as zero for accounting, while the client sees
the original response.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from llmport.gateway.context import CallContext
from llmport.gateway.pipeline import Handler
from llmport.observability.events import CacheLookup, EventBus
from llmport.types import Chunk, JSONResult, Result, StreamResult, Usage

IGNORED_FIELDS = frozenset({"user", "metadata", "stream_options", "store"})


class CacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    ttl: float = Field(default=300.0, gt=0, description="seconds an answer is kept")
    max_entries: int = Field(default=10_000, ge=1)
    scope: Literal["key", "org", "global"] = Field(default="key", description=(
        "who shares answers: the same API key, the same organisation, or everyone"))


class MemoryCache:
    """An LRU of answers with a time to live, in this process."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get(self, key: str) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: Any) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class CachePolicy:
    def __init__(self, config: CacheConfig, events: EventBus) -> None:
        self.config = config
        self.store = MemoryCache(config.max_entries, config.ttl)
        self.events = events

    async def __call__(self, ctx: CallContext, call_next: Handler) -> Result:
        control = (ctx.header(b"cache-control") or b"").lower()
        key = self._key(ctx)
        if b"no-cache" not in control:
            stored = self.store.get(key)
            self._emit(ctx, stored is not None)
            if stored is not None:
                ctx.state["cache"] = "hit"
                ctx.usage = Usage()  # served from the cache: nothing to bill
                ctx.response_headers.append((b"x-llmport-cache", b"hit"))
                if ctx.stream:
                    return StreamResult(_replay(stored))
                return JSONResult(stored)
        result = await call_next(ctx)
        if b"no-store" in control:
            return result
        if isinstance(result, JSONResult):
            if result.status == 200:
                self.store.put(key, result.data)
            return result
        return StreamResult(self._keep(key, result.chunks), close=result.close)

    def _key(self, ctx: CallContext) -> str:
        principal = ctx.principal
        scope = {"key": principal.id, "org": principal.org_id or principal.id,
                 "global": ""}[self.config.scope]
        body = {k: v for k, v in ctx.body.items() if k not in IGNORED_FIELDS}
        material = orjson.dumps([scope, ctx.endpoint.value, ctx.model, body],
                                option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(material).hexdigest()

    async def _keep(self, key: str, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        """Relay a stream, storing it only if it ends normally."""
        kept: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                kept.append(chunk.data)
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        self.store.put(key, kept)

    def _emit(self, ctx: CallContext, hit: bool) -> None:
        if self.events.active:
            self.events.emit(CacheLookup(ctx.request_id, ctx.model, hit))


async def _replay(stored: list[dict[str, Any]]) -> AsyncIterator[Chunk]:
    for data in stored:
        yield Chunk(orjson.loads(orjson.dumps(data)))  # a copy: later wrappers may edit it

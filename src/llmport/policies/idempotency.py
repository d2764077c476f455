"""Idempotency keys: a retried request gets the first answer again, and is billed once.

A request with an ``Idempotency-Key`` header claims ``(caller, key)`` in the shared
store with a fingerprint of its body. The first claim runs the request and stores
its answer (a stream is stored as its chunks and replayed as a stream); a repeat
with the same body gets the stored answer (``x-llmport-idempotent-replay: true``,
no upstream call, no charge); the same key with another body is a 409
``idempotency_key_reused``; a repeat arriving while the first still runs waits for
it, up to ``wait_timeout``, then gets a 409 ``idempotency_key_in_progress`` with
``Retry-After``. A first attempt that fails leaves nothing behind, so a retry runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from llmport.errors import ConflictError, InvalidRequestError
from llmport.gateway.context import CallContext
from llmport.gateway.pipeline import Handler
from llmport.stores.base import StateStore
from llmport.types import Chunk, JSONResult, Result, StreamResult, Usage

HEADER = b"idempotency-key"
POLL_SECONDS = 0.05
# ``ctx.state`` key: seconds to keep this request's answer, when less than ``ttl`` will do
# (set by the gateway's own callers, never from a header: a batch line's answer is needed
# only until the batch has kept it).
KEEP_FOR = "idempotency_keep_for"


class IdempotencyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    ttl: float = Field(default=86_400.0, gt=0, description="seconds an answer is kept")
    wait_timeout: float = Field(default=120.0, gt=0, description=(
        "how long a repeat waits for the first request to finish"))


class IdempotencyPolicy:
    def __init__(self, config: IdempotencyConfig, store: StateStore,
                 running_ttl: float) -> None:
        self.config = config
        self.store = store
        self.running_ttl = running_ttl  # a claim outlives the longest request, not more

    async def __call__(self, ctx: CallContext, call_next: Handler) -> Result:
        given = ctx.header(HEADER)
        if not given:
            return await call_next(ctx)
        if len(given) > 255:
            raise InvalidRequestError("Idempotency-Key must be at most 255 characters.",
                                      param="Idempotency-Key", code="invalid_idempotency_key")
        key = f"idem:{ctx.principal.id}:{hashlib.sha256(given).hexdigest()}"
        fingerprint = _fingerprint(ctx)
        ttl = min(self.config.ttl, ctx.state.get(KEEP_FOR, self.config.ttl))
        deadline = time.monotonic() + self.config.wait_timeout
        while True:
            claim = await self.store.claim(key, fingerprint, ttl, self.running_ttl)
            if claim.state == "new":
                break
            if claim.state == "conflict":
                raise ConflictError("This Idempotency-Key was already used with a different "
                                    "request.", code="idempotency_key_reused")
            if claim.state == "done":
                assert claim.response is not None
                return _replay(ctx, claim.response)
            if time.monotonic() >= deadline:
                raise ConflictError("A request with this Idempotency-Key is still in progress.",
                                    code="idempotency_key_in_progress",
                                    headers={"retry-after": "1"})
            await asyncio.sleep(POLL_SECONDS)
        try:
            result = await call_next(ctx)
        except BaseException:
            await self.store.abandon(key, fingerprint)
            raise
        if isinstance(result, JSONResult):
            stored = {"status": result.status, "data": result.data}
            await self.store.complete(key, fingerprint, orjson.dumps(stored), ttl)
            return result
        kept: list[dict[str, Any]] = []
        finished = [False]

        async def settle() -> None:
            if finished[0]:
                await self.store.complete(key, fingerprint, orjson.dumps({"chunks": kept}), ttl)
            else:
                await self.store.abandon(key, fingerprint)

        ctx.cleanups.append(settle)
        return StreamResult(_keep(result.chunks, kept, finished), close=result.close)


def _fingerprint(ctx: CallContext) -> str:
    material = orjson.dumps([ctx.endpoint.value, ctx.body], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(material).hexdigest()


async def _keep(chunks: AsyncIterator[Chunk], kept: list[dict[str, Any]],
                finished: list[bool]) -> AsyncIterator[Chunk]:
    try:
        async for chunk in chunks:
            kept.append(chunk.data)
            yield chunk
        finished[0] = True
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


def _replay(ctx: CallContext, stored: bytes) -> Result:
    record = orjson.loads(stored)
    ctx.state["replayed"] = True
    ctx.usage = Usage()  # answered before: nothing to bill
    ctx.response_headers.append((b"x-llmport-idempotent-replay", b"true"))
    if "chunks" in record:
        return StreamResult(_chunks(record["chunks"]))
    return JSONResult(record["data"], status=record["status"])


async def _chunks(stored: list[dict[str, Any]]) -> AsyncIterator[Chunk]:
    for data in stored:
        yield Chunk(data)

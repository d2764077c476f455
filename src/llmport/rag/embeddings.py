"""Texts → unit float32 vectors, through the gateway as a caller (their limits and spend)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any

import orjson

from llmport.api import internal
from llmport.errors import (
    AuthenticationError,
    BudgetExceededError,
    InvalidRequestError,
    LLMPortError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UpstreamError,
)
from llmport.types import Endpoint, Principal

if TYPE_CHECKING:  # numpy loads at the first embedding, not with every worker
    import numpy as np

    from llmport.gateway.gateway import Gateway


class EmbeddingFailed(Exception):
    """The embeddings request failed: its status and the error's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


REFUSALS = frozenset({429, 503})  # the gateway's limits and queues: worth waiting out


async def embed(gateway: Gateway, model: str, texts: list[str],
                who: Principal | dict[str, Any], batch: int,
                patience: float = 0.0) -> np.ndarray:
    """One row per text, each of unit length (so a dot product is the cosine). A request
    refused by limits or queues is sent again, with growing pauses, for up to ``patience``
    seconds (background indexing waits; a search does not)."""
    import numpy as np

    deadline = time.monotonic() + patience
    rows: list[np.ndarray] = []
    for start in range(0, len(texts), batch):
        part = texts[start:start + batch]
        delay = 1.0
        while True:
            answer = await internal.call(gateway, Endpoint.EMBEDDINGS, {
                "model": model, "input": part, "encoding_format": "float"}, who)
            if answer.ok or answer.status not in REFUSALS \
                    or time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 60.0)
        if not answer.ok:
            raise EmbeddingFailed(answer.status, answer.error_message())
        data = sorted(orjson.loads(answer.body)["data"], key=lambda d: d["index"])
        if len(data) != len(part):
            raise EmbeddingFailed(502, f"{len(part)} texts embedded into {len(data)} vectors")
        rows.append(np.asarray([d["embedding"] for d in data], dtype=np.float32))
    matrix = np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


_BY_STATUS: dict[int, type[LLMPortError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 402: BudgetExceededError,
    403: PermissionDeniedError, 404: NotFoundError, 429: RateLimitError}


def embedding_error(exc: EmbeddingFailed) -> LLMPortError:
    """A search's embedding failure, for its caller, as the same kind of error (a budget
    refusal stays 402, a rate limit 429); anything else is the upstream's failure (502)."""
    kind = _BY_STATUS.get(exc.status, UpstreamError)
    return kind(f"Embedding the query failed: {exc}", code="embedding_failed")

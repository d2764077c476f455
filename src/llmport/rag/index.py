"""Search over a vector store's chunks: their vectors as one numpy matrix per store, kept
in this process and reloaded when the store's ``revision`` changes (any replica's change).

A search costs one small query (the revision), a matrix product and a sort; a store of
100,000 chunks of 384 dimensions holds ~150 MB here, so ``rag.cached_stores`` and
``rag.cached_mb`` bound what stays loaded (least recently searched out first).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmport.db.rag import RagTables
from llmport.rag.filters import Predicate

if TYPE_CHECKING:  # numpy loads at the first search, not with every worker
    import numpy as np


@dataclass(slots=True)
class Loaded:
    revision: int
    vectors: np.ndarray  # (chunks, dimensions), unit rows
    texts: list[str]
    files: list[tuple[str, str, dict[str, Any]]]  # per chunk: file id, filename, attributes


@dataclass(slots=True)
class Hit:
    file_id: str
    filename: str
    attributes: dict[str, Any]
    score: float
    text: str


class SearchIndex:
    def __init__(self, tables: RagTables, keep: int, max_bytes: int) -> None:
        self.tables = tables
        self.keep = keep
        self.max_bytes = max_bytes
        self._loaded: OrderedDict[str, Loaded] = OrderedDict()
        self._loading: dict[tuple[str, int], asyncio.Future[Loaded]] = {}

    async def search(self, store_id: str, queries: np.ndarray, limit: int, threshold: float,
                     accept: Predicate | None) -> list[Hit]:
        """The ``limit`` best chunks by their best cosine to any query, at or above
        ``threshold`` (scores below 0 count as 0), of files whose attributes ``accept``."""
        import numpy as np

        loaded = await self._current(store_id)
        if loaded is None or not loaded.texts:
            return []
        scores = np.clip((loaded.vectors @ queries.T).max(axis=1), 0.0, 1.0)
        if accept is not None:
            allowed = np.fromiter((accept(attrs) for _, _, attrs in loaded.files), dtype=bool,
                                  count=len(loaded.files))
            scores = np.where(allowed, scores, -1.0)
        order = np.argsort(-scores, kind="stable")[:limit]
        hits = []
        for i in order:
            if scores[i] < threshold or scores[i] < 0:
                break  # sorted: the rest score lower
            file_id, filename, attributes = loaded.files[i]
            hits.append(Hit(file_id, filename, attributes, float(scores[i]), loaded.texts[i]))
        return hits

    async def _current(self, store_id: str) -> Loaded | None:
        revision = await self.tables.revision(store_id)
        if revision is None:
            self._loaded.pop(store_id, None)
            return None
        loaded = self._loaded.get(store_id)
        if loaded is None or loaded.revision != revision:
            loaded = await self._load_once(store_id, revision)
        self._loaded[store_id] = loaded
        self._loaded.move_to_end(store_id)
        # Least recently searched out first, past the count or the bytes (the one just
        # searched stays, however large).
        while len(self._loaded) > 1 and (len(self._loaded) > self.keep or sum(
                kept.vectors.nbytes for kept in self._loaded.values()) > self.max_bytes):
            self._loaded.popitem(last=False)
        return loaded

    async def _load_once(self, store_id: str, revision: int) -> Loaded:
        """One load per store and revision, however many searches wait for it."""
        key = (store_id, revision)
        pending = self._loading.get(key)
        if pending is None:
            pending = self._loading[key] = asyncio.ensure_future(self._load(store_id, revision))
            pending.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(pending)

    async def _load(self, store_id: str, revision: int) -> Loaded:
        rows = await self.tables.searchable(store_id)
        # Stacking a large store's vectors takes a while: not on the event loop.
        vectors = await asyncio.to_thread(_stack, [row[0] for row in rows])
        return Loaded(revision, vectors, [row[1] for row in rows],
                      [(file_id, name, attributes or {}) for _, _, file_id, name, attributes
                       in rows])


def _stack(embeddings: list[bytes]) -> np.ndarray:
    import numpy as np

    if not embeddings:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.frombuffer(e, dtype=np.float32) for e in embeddings])

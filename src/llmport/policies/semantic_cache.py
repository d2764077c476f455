"""Semantic response cache: a question asked in other words gets the answer already kept.

When the exact cache misses, the request's question (its last user message, or the prompt)
is embedded by a model of the config (through the router, like any call) and compared with
the questions whose answers are kept: the nearest one, if its cosine similarity reaches
``threshold``, answers. Only requests that agree on everything but the question's words can
match: the same scope (whose answers may be shared: ``cache.scope``), endpoint and model,
the same parameters (temperature, tools, response format…), and the same conversation
before the question (system prompt and earlier turns, exactly). The vectors are kept in
this process (``max_entries``, with the cache's time to live); the answers are the exact
cache's, so with Redis a replica finds the answer another kept once its own index points
to it.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from llmport.gateway.context import CallContext
from llmport.types import Endpoint

Embed = Callable[[str, str], Awaitable[list[float]]]  # (model, text) → vector
TEXT_FIELDS = {"messages", "prompt"}


class SemanticCacheConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    embedding_model: str | None = Field(default=None, description=(
        "a model of this config that serves embeddings (e.g. a sentence-transformers one)"))
    threshold: float = Field(default=0.95, gt=0, le=1, description=(
        "cosine similarity at which two conversations count as the same question"))
    max_entries: int = Field(default=10_000, ge=1, description="vectors kept in this process")
    max_chars: int = Field(default=1000, ge=1, description=(
        "longer questions are matched exactly only (embedding models read only so far)"))


def conversation(ctx: CallContext, ignored: frozenset[str], scope: str, max_chars: int
                 ) -> tuple[str, str] | None:
    """(partition, question): what must be equal for two requests to match, and what is
    embedded; None for requests this cache does not match by meaning.

    The question is the last user message (or the prompt); everything before it — system
    prompt, earlier turns — must be equal, as must ``scope`` (who may share answers) and
    every parameter. Embedding models read only so far (MiniLM: 256 tokens), so a question
    longer than ``max_chars`` is left to the exact cache: two long questions that began
    alike would embed alike whatever their ends said.
    """
    body = ctx.body
    if ctx.endpoint is Endpoint.CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        last = messages[-1]
        if not isinstance(last, dict) or last.get("role") != "user" \
                or not isinstance(last.get("content"), str):
            return None  # parts (images, files…), or not a question: exact matches only
        question, before = last["content"], messages[:-1]
    elif ctx.endpoint is Endpoint.COMPLETIONS and isinstance(body.get("prompt"), str):
        question, before = body["prompt"], []
    else:
        return None
    if not question.strip() or len(question) > max_chars:
        return None
    rest = {k: v for k, v in body.items() if k not in ignored and k not in TEXT_FIELDS}
    material = orjson.dumps([scope, ctx.endpoint.value, ctx.model, before, rest],
                            option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(material).hexdigest(), question


class SemanticIndex:
    """Unit vectors by partition, each pointing to an exact-cache key; oldest out first."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        import numpy  # the semantic cache's one extra dependency (the `local` extra has it)

        self.np = numpy
        self.max_entries = max_entries
        self.ttl = ttl
        # key → (partition, expiry), oldest first: every entry lives ``ttl`` from its adding,
        # so the expired ones are always at the front.
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._by_partition: dict[str, dict[str, Any]] = {}  # partition → key → vector
        # partition → its keys and their vectors as one matrix, made at the first lookup
        # after the partition changed (not at every lookup: 10,000 vectors are 15 MB)
        self._matrices: dict[str, tuple[list[str], Any]] = {}

    def unit(self, vector: list[float]) -> Any:
        array = self.np.asarray(vector, dtype=self.np.float32)
        norm = float(self.np.linalg.norm(array))
        return array / norm if norm else array

    def add(self, partition: str, key: str, vector: Any) -> None:
        self._drop(key)
        self._entries[key] = (partition, time.monotonic() + self.ttl)
        self._by_partition.setdefault(partition, {})[key] = vector
        self._matrices.pop(partition, None)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def nearest(self, partition: str, vector: Any) -> tuple[str, float] | None:
        """The closest live entry of ``partition`` and its cosine similarity."""
        self._expire()
        members = self._by_partition.get(partition)
        if not members:
            return None
        matrix = self._matrices.get(partition)
        if matrix is None:
            keys = list(members)
            matrix = self._matrices[partition] = (keys, self.np.stack([members[k] for k in keys]))
        keys, vectors = matrix
        similarities = vectors @ vector
        best = int(similarities.argmax())
        return keys[best], float(similarities[best])

    def _expire(self) -> None:
        now = time.monotonic()
        while self._entries:
            key, (_, expires) = next(iter(self._entries.items()))
            if expires >= now:
                return
            self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            partition = entry[0]
            self._matrices.pop(partition, None)
            members = self._by_partition[partition]
            del members[key]
            if not members:
                del self._by_partition[partition]

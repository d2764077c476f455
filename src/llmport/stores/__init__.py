"""Shared state between replicas: limits, counters, idempotency records, pub/sub.

``open_store(url)`` gives a ``MemoryStore`` (no URL: one process) or a
``RedisStore`` (a Redis URL: every replica). Both implement ``StateStore``.
``RedisStore`` is imported on first use, so a gateway without Redis never
loads the Redis client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmport.stores.base import (
    Admission,
    Claim,
    CounterCeiling,
    ItemState,
    LeaseLimit,
    StateStore,
    WindowLimit,
)
from llmport.stores.factory import open_store
from llmport.stores.memory import MemoryStore

if TYPE_CHECKING:
    from llmport.stores.redis import RedisStore

__all__ = [
    "Admission",
    "Claim",
    "CounterCeiling",
    "ItemState",
    "LeaseLimit",
    "MemoryStore",
    "RedisStore",
    "StateStore",
    "WindowLimit",
    "open_store",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStore":
        from llmport.lean_imports import redis_store

        return redis_store()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

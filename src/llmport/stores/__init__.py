"""Shared state between replicas: limits, counters, idempotency records, pub/sub.

``open_store(url)`` gives a ``MemoryStore`` (no URL: one process) or a
``RedisStore`` (a Redis URL: every replica). Both implement ``StateStore``.
"""

from __future__ import annotations

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

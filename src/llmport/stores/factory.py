"""``open_store``: the configured shared-state backend from one URL.

No URL means one replica on in-process state; a Redis URL (``redis://``,
``rediss://`` for TLS, ``unix://`` for a socket) means state shared by every
replica pointed at the same Redis and prefix.
"""

from __future__ import annotations

from llmport.stores.base import StateStore
from llmport.stores.memory import MemoryStore

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_store(url: str | None, prefix: str = "llmport:") -> StateStore:
    """The store for ``url``; nothing connects until the first call. Raises ``ValueError`` for
    a URL of another kind."""
    if url is None:
        return MemoryStore(prefix)
    if url.lower().startswith(REDIS_SCHEMES):
        from llmport.lean_imports import redis_store

        return redis_store().from_url(url, prefix)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ValueError(f"unsupported state store URL {scheme!r}: expected "
                     "redis://, rediss:// or unix://")

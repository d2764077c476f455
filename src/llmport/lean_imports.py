"""Dependencies imported without the optional packages they load on their own.

Two libraries llmport uses import, when they find them installed, large packages llmport
never asks them to use: structlog loads rich (for console tracebacks; rich is installed
because Typer depends on it) and redis-py 8 loads the OpenTelemetry metrics SDK (and
psutil through it) for client metrics llmport does not enable. Together they were about
8 MB of every worker's memory (``bench/``: RSS per worker, whose budget is 100 MB). Hidden
for the moment of the import, they are "not installed" to that library, which takes its
own fallback (plain tracebacks; no redis-py metrics); afterwards they are importable again
for anyone who wants them. A package already imported is left alone.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmport.stores.redis import RedisStore


@contextlib.contextmanager
def hiding(*names: str) -> Iterator[None]:
    """Within the block, importing any of ``names`` raises ImportError."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "absent"
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, True) is None:
                del sys.modules[name]


def structlog() -> ModuleType:
    """structlog, without rich."""
    with hiding("rich"):
        import structlog as module
    return module


def redis_store() -> type[RedisStore]:
    """``RedisStore`` (and redis-py under it), without the OpenTelemetry metrics SDK."""
    with hiding("opentelemetry.sdk.metrics"):
        from llmport.stores.redis import RedisStore as store
    return store

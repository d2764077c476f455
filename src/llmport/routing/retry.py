"""How long to wait before the next attempt: exponential backoff with full jitter.

An upstream's own ``Retry-After`` / ``retry-after-ms`` wins when it asks for
longer. When another deployment is available there is nothing to wait for:
the next attempt goes there at once.
"""

from __future__ import annotations

import random

from llmport.errors import LLMPortError, UpstreamStatusError
from llmport.routing.settings import RouterConfig


def backoff_delay(config: RouterConfig, retry: int, error: LLMPortError,
                  elsewhere: bool) -> float:
    """Seconds to sleep before retry number ``retry`` (0-based) after ``error``."""
    if elsewhere:
        return 0.0
    ceiling = min(config.backoff_max, config.backoff_base * 2 ** retry)
    delay = random.uniform(0.0, ceiling)
    hinted = retry_after_of(error)
    return max(delay, hinted) if hinted is not None else delay


def retry_after_of(error: LLMPortError) -> float | None:
    if isinstance(error, UpstreamStatusError):
        return error.retry_after
    return getattr(error, "retry_after", None)

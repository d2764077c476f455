"""OpenAI's rate-limit response headers (``x-ratelimit-limit-requests`` and the rest).

Every admitted request sends six of them, so the numbers are formatted once and kept:
the limits (a few per deployment) and the resets of minute windows (to the hundredth of
a second, at most 6,000 of them).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from llmport.stores.base import ItemState

_REQUESTS_HEADERS = (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
                     b"x-ratelimit-reset-requests")
_TOKENS_HEADERS = (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens",
                   b"x-ratelimit-reset-tokens")


def rate_headers(kinds: Sequence[tuple[str, object]], windows: Sequence[ItemState]
                 ) -> list[tuple[bytes, bytes]]:
    """OpenAI's ``x-ratelimit-*`` headers, for the tightest request and token windows.

    ``kinds`` names each window's kind (``"requests"`` or ``"tokens"``, then anything),
    ``windows`` holds their states after the admission, in the same order.
    """
    requests: ItemState | None = None
    tokens: ItemState | None = None
    for (kind, _), state in zip(kinds, windows, strict=True):
        if kind == "requests":
            if requests is None or state.limit - state.used < requests.limit - requests.used:
                requests = state
        elif tokens is None or state.limit - state.used < tokens.limit - tokens.used:
            tokens = state
    headers: list[tuple[bytes, bytes]] = []
    for names, tight in ((_REQUESTS_HEADERS, requests), (_TOKENS_HEADERS, tokens)):
        if tight is not None:
            left = tight.limit - tight.used
            headers += ((names[0], count_text(tight.limit)),
                        (names[1], b"%d" % left if left > 0 else b"0"),
                        (names[2], reset_text(tight.reset_s)))
    return headers


# Formatting the numbers was a third of the headers' cost: see the module's docstring.
_RESETS: dict[int, bytes] = {}  # at most 6,000: hundredths of a second below a minute


@functools.lru_cache(maxsize=1024)
def count_text(limit: float) -> bytes:
    return b"%d" % limit


def reset_text(seconds: float) -> bytes:
    """``duration`` as header bytes, to the hundredth of a second."""
    if seconds >= 60:
        return duration(seconds).encode()
    hundredths = round(seconds * 100) if seconds > 0 else 0
    text = _RESETS.get(hundredths)
    if text is None:
        text = _RESETS[hundredths] = duration(hundredths / 100).encode()
    return text


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{rest}s"

"""Upstream HTTP failures → the exception tree, shared by the HTTP providers.

Status, type, code and message of the upstream's error are kept; the two
kinds of 400 the router treats specially (context length, content policy)
are recognised here, where the upstream's wording is known.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmport.errors import (
    ContentPolicyError,
    ContextLengthExceededError,
    LLMPortError,
    UpstreamStatusError,
)


def translate_status(status: int, body: bytes, headers: Any) -> LLMPortError:
    """An upstream error response → the exception tree, keeping status, type and message."""
    error: dict[str, Any] = {}
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict):
            nested = parsed.get("error")
            error = nested if isinstance(nested, dict) else parsed
    except orjson.JSONDecodeError:
        pass
    message = str(error.get("message") or body[:500].decode("utf-8", "replace")
                  or f"upstream returned HTTP {status}")
    code = error.get("code")
    code = str(code) if code is not None else None
    param = error.get("param") if isinstance(error.get("param"), str) else None
    lowered = message.lower()
    if status == 400 and (code == "context_length_exceeded" or "context length" in lowered
                          or "context window" in lowered):
        return ContextLengthExceededError(message, param=param or "messages")
    if status == 400 and (code in ("content_policy_violation", "content_filter")
                          or "content management policy" in lowered):
        return ContentPolicyError(message, param=param)
    return UpstreamStatusError(status, message, error_type=error.get("type"), code=code,
                               param=param, retry_after=retry_after(headers))


def retry_after(headers: Any) -> float | None:
    """Seconds to wait as the upstream asked (``retry-after-ms`` wins over ``retry-after``)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None

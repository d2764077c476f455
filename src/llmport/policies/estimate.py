"""Token estimates for a request before any model has seen it.

One token per four characters of every text the model reads, plus a few tokens per
message and a flat 1,600 per image or document. Rate limits charge this at admission
(and correct it with the real usage afterwards); `/v1/messages/count_tokens` answers
it when no deployment can count exactly.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_ATTACHMENT = 1600


def estimate_input_tokens(request: dict[str, Any]) -> int:
    """The documented estimate for an OpenAI-form chat request."""
    chars = 0
    attachments = 0
    messages = request.get("messages") or ()
    for message in messages:  # every admitted request with a TPM limit runs this loop
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    chars += len(part.get("text") or "")
                else:
                    attachments += 1
        calls = message.get("tool_calls")
        if calls:
            for call in calls:
                function = call.get("function") or {}
                chars += len(function.get("name") or "") + len(function.get("arguments") or "")
    tools = request.get("tools")
    if tools:
        for tool in tools:
            chars += len(orjson.dumps(tool.get("function") or {}))
    return (math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)
            + TOKENS_PER_ATTACHMENT * attachments)


def estimate_tokens(request: dict[str, Any]) -> int:
    """The prompt's estimate, for any endpoint (the answer's tokens are charged afterwards)."""
    if "messages" in request:
        prompt = estimate_input_tokens(request)
    else:  # completions (`prompt`) and embeddings (`input`)
        prompt = math.ceil(_text_chars(request.get("prompt", request.get("input"))) /
                           CHARS_PER_TOKEN)
    return max(1, prompt)


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) if isinstance(v, str | list) else 1 for v in value)
    return 0

"""Stream helpers for the router: priming, following what was sent, estimating usage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from llmport.errors import UpstreamTimeoutError
from llmport.gateway.context import CallContext
from llmport.types import Chunk, Usage


async def prime(iterator: AsyncIterator[Chunk], limit: float | None, name: str) -> list[Chunk]:
    """Read chunks until the first one with output (or the stream's end), within ``limit``.

    Until this returns, nothing has been sent to the client, so a failure here can
    still be retried or fall back transparently.
    """
    first: list[Chunk] = []
    try:
        async with asyncio.timeout(limit):
            async for chunk in iterator:
                first.append(chunk)
                if chunk.has_output:
                    break
    except TimeoutError:
        raise UpstreamTimeoutError(f"{name} sent no first token within {limit:g}s") from None
    return first


class SentText:
    """What the client has received of choice 0, kept only when a stream may be rescued."""

    __slots__ = ("id", "parts", "rescuable")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.rescuable = True
        self.id: str | None = None

    def add(self, data: dict[str, Any]) -> None:
        if self.id is None:
            self.id = data.get("id")
        for choice in data.get("choices") or ():
            if choice.get("index", 0) != 0:
                self.rescuable = False  # n > 1: choices cannot be continued one by one
                continue
            delta = choice.get("delta") or {}
            if delta.get("tool_calls") or delta.get("function_call"):
                self.rescuable = False  # half a tool call cannot be continued as text
            content = delta.get("content")
            if content:
                self.parts.append(content)
            if choice.get("finish_reason"):
                self.rescuable = False  # complete already: nothing to rescue

    @property
    def text(self) -> str:
        return "".join(self.parts)


def estimated_usage_chunk(ctx: CallContext, last: Chunk | None, output_chunks: int) -> Chunk:
    """A usage chunk for a stream whose upstream reported none (about 4 bytes per token)."""
    prompt_bytes = len(ctx.raw_body) if ctx.raw_body is not None else len(str(ctx.body))
    usage = Usage(prompt_tokens=max(1, prompt_bytes // 4), completion_tokens=output_chunks,
                  estimated=True)
    ctx.usage = usage
    head = last.data if last is not None else {}
    data = {"id": head.get("id", f"chatcmpl-{ctx.request_id}"),
            "object": head.get("object", "chat.completion.chunk"),
            "created": head.get("created", 0), "model": head.get("model", ctx.model),
            "choices": [], "usage": usage.to_openai()}
    return Chunk(data)

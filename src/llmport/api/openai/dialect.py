"""The OpenAI dialect: requests are already in the domain's form; responses pass through."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from llmport.api.openai.validation import parse_json_object
from llmport.errors import LLMPortError
from llmport.gateway.context import CallContext
from llmport.types import Chunk, JSONResult

DONE = b"data: [DONE]\n\n"


class OpenAIDialect:
    name = "openai"

    def __init__(self, validate: Callable[[dict[str, Any]], tuple[str, bool]]) -> None:
        self._validate = validate

    def decode(self, ctx: CallContext, raw: bytes) -> None:
        body = parse_json_object(raw)
        ctx.model, ctx.stream = self._validate(body)
        ctx.body, ctx.raw_body = body, raw

    def encode(self, ctx: CallContext, result: JSONResult) -> bytes:
        return result.body()

    async def encode_stream(self, ctx: CallContext,
                            chunks: AsyncIterator[Chunk]) -> AsyncIterator[bytes]:
        # Providers always end with a usage chunk (the gateway needs it for accounting);
        # the client sees it only if it asked for it, as with OpenAI itself.
        keep_usage = ctx.include_usage
        try:
            async for chunk in chunks:
                if not keep_usage and "usage" in chunk.data and not chunk.data.get("choices"):
                    continue
                yield chunk.sse()
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        yield DONE

    def stream_error(self, error: LLMPortError) -> bytes:
        return b"data: " + orjson.dumps(error.openai_body()) + b"\n\n"

    def error_body(self, error: LLMPortError) -> bytes:
        return error.openai_json()

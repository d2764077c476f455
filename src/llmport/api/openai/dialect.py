"""The OpenAI dialect: requests are already in the domain's form; responses pass through."""

from __future__ import annotations

from collections.abc import Callable
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

    def stream_encoder(self, ctx: CallContext) -> OpenAIStream:
        return OpenAIStream(ctx.include_usage)

    def stream_error(self, error: LLMPortError) -> bytes:
        return b"data: " + orjson.dumps(error.openai_body()) + b"\n\n"

    def error_body(self, error: LLMPortError) -> bytes:
        return error.openai_json()


class OpenAIStream:
    """A stream's chunks as SSE, as the upstream sent them where it could be kept."""

    __slots__ = ("keep_usage",)

    def __init__(self, keep_usage: bool) -> None:
        # Providers always end with a usage chunk (the gateway needs it for accounting);
        # the client sees it only if it asked for it, as with OpenAI itself.
        self.keep_usage = keep_usage

    def encode(self, chunk: Chunk) -> bytes:
        data = chunk.data
        if not self.keep_usage and "usage" in data and not data.get("choices"):
            return b""
        return chunk.sse()

    def end(self) -> bytes:
        return DONE

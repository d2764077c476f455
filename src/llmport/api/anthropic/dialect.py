"""The Messages dialect: Messages requests in, the gateway's OpenAI form inside, Messages out.

Decoding validates the body and translates it once (``translation.messages_to_openai``);
every provider then serves it like any chat request, through the whole
pipeline. Encoding translates the OpenAI result back
(``translation.openai_to_messages``), streams included, event by event.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmport.api.anthropic.validation import validate_messages
from llmport.api.openai.validation import parse_json_object
from llmport.errors import LLMPortError
from llmport.gateway.context import CallContext
from llmport.translation.messages_to_openai import chat_request
from llmport.translation.openai_to_messages import message_response
from llmport.translation.openai_to_messages_stream import MessageEvents
from llmport.types import Chunk, JSONResult

THINKING = "messages.thinking"  # ctx.state key: the client asked to see the model's reasoning


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    """One Messages stream event: its name line, then its data line."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessagesDialect:
    name = "anthropic"

    def decode(self, ctx: CallContext, raw: bytes) -> None:
        body = parse_json_object(raw)
        ctx.model, ctx.stream = validate_messages(body)
        ctx.body, ctx.raw_body = chat_request(body), None
        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
            ctx.state[THINKING] = True
        # The Messages API names its request id header `request-id`; its clients read it.
        ctx.response_headers.append((b"request-id", ctx.request_id.encode()))

    def encode(self, ctx: CallContext, result: JSONResult) -> bytes:
        return orjson.dumps(message_response(result.data, model=ctx.model,
                                             stop_sequences=ctx.body.get("stop"),
                                             thinking=THINKING in ctx.state))

    def stream_encoder(self, ctx: CallContext) -> MessagesStream:
        return MessagesStream(MessageEvents(ctx.model, ctx.body.get("stop"), THINKING in ctx.state))

    def stream_error(self, error: LLMPortError) -> bytes:
        return b"event: error\ndata: " + error.anthropic_json() + b"\n\n"

    def error_body(self, error: LLMPortError) -> bytes:
        return error.anthropic_json()


class MessagesStream:
    """A stream's OpenAI chunks as Messages events."""

    __slots__ = ("events",)

    def __init__(self, events: MessageEvents) -> None:
        self.events = events

    def encode(self, chunk: Chunk) -> bytes:
        batch = self.events.feed(chunk.data)
        return b"".join(sse_event(name, data) for name, data in batch) if batch else b""

    def end(self) -> bytes:
        return b"".join(sse_event(name, data) for name, data in self.events.close())

"""Anthropic's Messages API as a provider: any config model can be served by Claude.

Requests are translated from the gateway's OpenAI form once
(``translation.openai_to_messages``), answers back
(``translation.messages_to_openai``), streams event by event. One
``HTTPClient`` pool per deployment, as the OpenAI-compatible provider; its SSE
framing and error helpers are shared, not copied.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from llmport.errors import (
    ContextLengthExceededError,
    LLMPortError,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamStatusError,
)
from llmport.providers.base import Capabilities
from llmport.providers.http_client import Response
from llmport.providers.http_provider import HTTPProvider
from llmport.providers.sse import SSEDecoder
from llmport.providers.upstream_errors import retry_after
from llmport.translation.messages_to_openai import chat_completion
from llmport.translation.messages_to_openai_stream import ChunkStream
from llmport.translation.openai_to_messages import messages_request
from llmport.types import Chunk, Endpoint, JSONResult

if TYPE_CHECKING:
    from llmport.config import ModelConfig
    from llmport.gateway.context import CallContext

MESSAGES_PATH = "/v1/messages"
COUNT_PATH = "/v1/messages/count_tokens"
COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice")  # what counting reads
# The Messages API's error types, by the status it sends them with.
ERROR_STATUSES = {"invalid_request_error": 400, "authentication_error": 401,
                  "billing_error": 402, "permission_error": 403, "not_found_error": 404,
                  "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
                  "timeout_error": 504, "overloaded_error": 529}


class AnthropicOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_base: str = Field(default="https://api.anthropic.com",
                          description="the API's root URL, without /v1")
    api_key: SecretStr | None = None
    anthropic_version: str = Field(default="2023-06-01", description="anthropic-version header")
    default_max_tokens: int = Field(
        default=4096, ge=1,
        description="max_tokens to send when the request has none (the Messages API needs one)")
    headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(default=0, ge=0, description="0 = unlimited")

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("api_base must be an http:// or https:// URL")
        return value.rstrip("/").removesuffix("/v1")


class AnthropicProvider(HTTPProvider):
    Options = AnthropicOptions
    forwarded_headers = (b"traceparent", b"tracestate", b"anthropic-beta")
    capabilities = Capabilities(endpoints=frozenset({Endpoint.CHAT}), tools=True, vision=True,
                                json_schema=True, prefill=True, stream_usage=True)

    def __init__(self, config: ModelConfig) -> None:
        options: AnthropicOptions = config.options
        headers = {"anthropic-version": options.anthropic_version, **options.headers}
        if options.api_key is not None:
            headers["x-api-key"] = options.api_key.get_secret_value()
        super().__init__(config, headers)

    def _payload(self, request: dict[str, Any]) -> dict[str, Any]:
        return messages_request(request, model=self.config.upstream_model,
                                default_max_tokens=self.options.default_max_tokens)

    async def _post_json(self, ctx: CallContext, path: str, payload: dict[str, Any]) -> Any:
        """POST and parse one JSON answer, translating every failure."""
        response = await self.post(ctx, path, orjson.dumps(payload), self.limits)
        body = await response.read()
        if response.status >= 400:
            raise translate_error(response.status, body, response.headers)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"{self.name} answered with a body that is not JSON"
                                        ) from None

    async def complete(self, ctx: CallContext, endpoint: Endpoint,
                       request: dict[str, Any]) -> JSONResult:
        if endpoint is not Endpoint.CHAT:
            raise self.unsupported(endpoint)
        data = await self._post_json(ctx, MESSAGES_PATH, self._payload(request))
        if not isinstance(data, dict) or data.get("type") != "message":
            raise UpstreamProtocolError(f"{self.name} answered with something not a message")
        return JSONResult(chat_completion(data, int(time.time())))

    async def count_tokens(self, ctx: CallContext, request: dict[str, Any]) -> int | None:
        full = self._payload({**request, "n": None, "logprobs": None})
        data = await self._post_json(ctx, COUNT_PATH,
                                {key: full[key] for key in COUNT_FIELDS if key in full})
        tokens = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, int):
            raise UpstreamProtocolError(f"{self.name} answered count_tokens without a count")
        return tokens

    async def stream(self, ctx: CallContext, endpoint: Endpoint,
                     request: dict[str, Any]) -> AsyncIterator[Chunk]:
        if endpoint is not Endpoint.CHAT:
            raise self.unsupported(endpoint)
        payload = orjson.dumps({**self._payload(request), "stream": True})
        response: Response | None = None
        translator = ChunkStream(int(time.time()))
        try:
            response = await self.post(ctx, MESSAGES_PATH, payload, self.stream_limits)
            if response.status >= 400:
                raise translate_error(response.status, await response.read(), response.headers)
            decoder = SSEDecoder()
            while piece := await response.read_chunk():
                for event in decoder.feed(piece):
                    data = _parse_event(event.data)
                    if data is None:
                        ctx.skipped_chunks += 1  # one malformed event is skipped, not fatal
                        continue
                    if data.get("type") == "error":
                        raise _stream_error(data)
                    for chunk in translator.feed(data):
                        yield Chunk(chunk)
            if not translator.done:
                if not translator.stopped:
                    raise UpstreamConnectionError(
                        f"{self.name} ended the stream before the answer was complete")
                for data in translator.feed({"type": "message_stop"}):  # complete but unsaid
                    yield Chunk(data)
        finally:
            if response is not None:
                # A finished body has already handed its connection back to the pool; anything
                # else closes it, so the upstream sees the disconnect and stops generating.
                response.close()


def _parse_event(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _stream_error(data: dict[str, Any]) -> LLMPortError:
    error = data["error"] if isinstance(data.get("error"), dict) else {}
    kind = str(error.get("type") or "api_error")
    return UpstreamStatusError(ERROR_STATUSES.get(kind, 500),
                               str(error.get("message") or "upstream stream error"),
                               error_type=kind)


def translate_error(status: int, body: bytes, headers: Any) -> LLMPortError:
    """A Messages API error response → the exception tree, keeping status, type and message."""
    error: dict[str, Any] = {}
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except orjson.JSONDecodeError:
        pass
    message = str(error.get("message") or body[:500].decode("utf-8", "replace")
                  or f"upstream returned HTTP {status}")
    if status in (400, 413) and "prompt is too long" in message.lower():
        return ContextLengthExceededError(message, param="messages")
    wait = retry_after(headers)
    forwarded = {"retry-after": headers["retry-after"]} \
        if wait is not None and headers.get("retry-after") else None
    return UpstreamStatusError(status, message, error_type=error.get("type"),
                               retry_after=wait, headers=forwarded)

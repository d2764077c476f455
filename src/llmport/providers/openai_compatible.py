"""Any OpenAI-compatible HTTP API: OpenAI itself, vLLM, TGI, Ollama, llama.cpp server, ….

The client is ``http_client.HTTPClient``, chosen by measurement (see its
docstring): one keep-alive pool per deployment, request heads built once.
Requests whose body the gateway did not change are forwarded as the client's
original bytes; responses are relayed as the upstream's bytes, parsed once to
read usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from llmport.errors import UpstreamConnectionError, UpstreamProtocolError, UpstreamStatusError
from llmport.providers.base import Capabilities
from llmport.providers.http_client import Response
from llmport.providers.http_provider import HTTPProvider
from llmport.providers.sse import SSEDecoder
from llmport.providers.upstream_errors import translate_status
from llmport.types import Chunk, Endpoint, JSONResult

if TYPE_CHECKING:
    from llmport.config import ModelConfig
    from llmport.gateway.context import CallContext

PATHS = {
    Endpoint.CHAT: "/chat/completions",
    Endpoint.COMPLETIONS: "/completions",
    Endpoint.EMBEDDINGS: "/embeddings",
}
DONE_GRACE = 1.0  # seconds to wait for [DONE] once every choice has finished


class OpenAICompatibleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_base: str = Field(description="base URL including the version, e.g. http://host:8000/v1")
    api_key: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(default=0, ge=0, description="0 = unlimited")
    stream_usage: bool = Field(
        default=True,
        description="ask the upstream for usage at the end of streams (stream_options)")
    supports_prefill: bool = Field(default=False, description=(
        "the server continues a trailing assistant message (vLLM, Ollama, llama.cpp do)"))
    prefill_extra_body: dict[str, Any] = Field(default_factory=dict, description=(
        "merged into requests that end with an assistant message, e.g. vLLM's "
        "{continue_final_message: true, add_generation_prompt: false}"))

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("api_base must be an http:// or https:// URL")
        return value.rstrip("/")


class OpenAICompatibleProvider(HTTPProvider):
    Options = OpenAICompatibleOptions
    forwarded_headers = (b"traceparent", b"tracestate", b"openai-organization",
                         b"openai-project")
    capabilities = Capabilities(
        endpoints=frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS}),
        tools=True, vision=True, json_schema=True, prefill=False, stream_usage=True)

    def __init__(self, config: ModelConfig) -> None:
        options: OpenAICompatibleOptions = config.options
        headers = dict(options.headers)
        if options.api_key is not None:
            headers["authorization"] = f"Bearer {options.api_key.get_secret_value()}"
        super().__init__(config, headers)
        self._upstream_model = config.upstream_model
        self.capabilities = replace(self.capabilities, prefill=options.supports_prefill)

    def _payload(self, ctx: CallContext, request: dict[str, Any], stream: bool) -> bytes:
        """The bytes to send: the client's own when nothing needs to change."""
        wants_usage = stream and self.options.stream_usage and not _asks_usage(request)
        prefill = self.options.prefill_extra_body if _ends_with_assistant(request) else None
        if (request is ctx.body and ctx.raw_body is not None and not wants_usage
                and not prefill and request.get("model") == self._upstream_model):
            return ctx.raw_body
        body = {**request, "model": self._upstream_model}
        if prefill:
            body.update(prefill)
        if wants_usage:
            body["stream_options"] = {**(request.get("stream_options") or {}),
                                      "include_usage": True}
        return orjson.dumps(body)

    async def complete(self, ctx: CallContext, endpoint: Endpoint,
                       request: dict[str, Any]) -> JSONResult:
        response = await self.post(ctx, PATHS[endpoint],
                                   self._payload(ctx, request, stream=False), self.limits)
        body = await response.read()
        if response.status >= 400:
            raise translate_status(response.status, body, response.headers)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamProtocolError(f"{self.name} answered with a body that is not JSON")
        return JSONResult(data=data, raw=body, status=response.status)

    async def stream(self, ctx: CallContext, endpoint: Endpoint,
                     request: dict[str, Any]) -> AsyncIterator[Chunk]:
        payload = self._payload(ctx, request, stream=True)
        # When the gateway asked for usage on the client's behalf, the upstream adds
        # `"usage": null` to every chunk; strip it so the client sees what it asked for.
        strip_usage = self.options.stream_usage and not _asks_usage(request)
        choices_left = set(range(int(request.get("n") or 1)))
        response: Response | None = None
        try:
            response = await self.post(ctx, PATHS[endpoint], payload, self.stream_limits)
            if response.status >= 400:
                raise translate_status(response.status, await response.read(), response.headers)
            decoder = SSEDecoder()
            while True:
                piece = await _read(response, DONE_GRACE if not choices_left else None)
                if not piece:
                    break  # end of body, or the answer is complete and [DONE] is late
                for event in decoder.feed(piece):
                    if event.data == b"[DONE]":
                        continue
                    chunk = _parse_chunk(event.data, event.raw)
                    if chunk is None:
                        ctx.skipped_chunks += 1  # one malformed event is skipped, not fatal
                        continue
                    if strip_usage and chunk.data.get("usage", 0) is None:
                        _drop_null_usage(chunk)
                    if choices_left:
                        _tick_finished(chunk.data, choices_left)
                    yield chunk
            if choices_left:
                raise UpstreamConnectionError(
                    f"{self.name} ended the stream before the answer was complete")
        finally:
            if response is not None:
                # A finished body has already handed its connection back to the pool; anything
                # else (client gone, error, a server that never sent [DONE]) closes it, so the
                # upstream sees the disconnect and stops.
                response.close()


async def _read(response: Response, grace: float | None) -> bytes:
    if grace is None:
        return await response.read_chunk()
    try:
        async with asyncio.timeout(grace):
            return await response.read_chunk()
    except TimeoutError:
        return b""


def _tick_finished(data: dict[str, Any], choices_left: set[int]) -> None:
    for choice in data.get("choices") or ():
        if choice.get("finish_reason"):
            choices_left.discard(choice.get("index", 0))


_NULL_USAGE_END = b',"usage":null}\n\n'


def _drop_null_usage(chunk: Chunk) -> None:
    """The chunk without its ``"usage": null``: in the relayed bytes too when that is the
    object's last member, as OpenAI and vLLM write it (a first match anywhere could be a
    nested object's); otherwise the chunk is serialised again."""
    del chunk.data["usage"]
    raw = chunk.raw
    chunk.raw = raw[:-len(_NULL_USAGE_END)] + b"}\n\n" \
        if raw and raw.endswith(_NULL_USAGE_END) else None


def _ends_with_assistant(request: dict[str, Any]) -> bool:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return False
    last = messages[-1]
    return isinstance(last, dict) and last.get("role") == "assistant"


def _asks_usage(request: dict[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _parse_chunk(data: bytes, raw: bytes) -> Chunk | None:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None  # one malformed event is skipped, not fatal
    if not isinstance(parsed, dict):
        return None
    if "error" in parsed and "choices" not in parsed:
        error = parsed["error"] if isinstance(parsed["error"], dict) else {}
        raise UpstreamStatusError(502, str(error.get("message") or "upstream stream error"),
                                  error_type=error.get("type"), code=error.get("code"))
    if not isinstance(parsed.get("choices"), list):
        return None  # not a chunk at all
    return Chunk(parsed, raw if raw.startswith(b"data: ") else None)

"""OpenAPI description of the bare-ASGI proxy routes, merged into FastAPI's document.

The hot routes bypass FastAPI (see docs/architecture.md), so FastAPI cannot
describe them; these models do, for ``/docs`` only. They document the fields
the gateway reads; any other OpenAI field passes through to the upstream.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmport.api.anthropic.openapi import add_messages_routes


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(_Open):
    include_usage: bool = False


class ChatCompletionRequest(_Open):
    model: str = Field(description="a public model name from GET /v1/models")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    seed: int | None = None
    user: str | None = None


class CompletionRequest(_Open):
    model: str
    prompt: str | list[Any]
    stream: bool = False
    max_tokens: int | None = None


class ResponseRequest(_Open):
    model: str
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    tools: list[dict[str, Any]] | None = Field(default=None, description="function tools")
    max_output_tokens: int | None = None


class EmbeddingRequest(_Open):
    model: str
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


ERRORS = {str(status): {"description": text, "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/ErrorEnvelope"}}}}
    for status, text in [(400, "invalid request"), (401, "missing or wrong API key"),
                         (404, "unknown model"), (429, "rate limited"),
                         (502, "upstream failed"), (504, "upstream timed out")]}

ERROR_ENVELOPE = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type", "param", "code"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}


def _post(summary: str, model: type[BaseModel], streams: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        content["text/event-stream"] = {"schema": {"type": "string"},
                                        "description": "`data: {chunk}` events, then `[DONE]`"}
    return {"post": {
        "tags": ["openai"], "summary": summary, "security": [{"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
        "responses": {"200": {"description": "OpenAI-compatible response", "content": content},
                      **ERRORS}}}


def add_proxy_routes(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ResponseRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["ErrorEnvelope"] = ERROR_ENVELOPE
    document["components"].setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer"}
    listing = {"tags": ["openai"], "security": [{"bearer": []}],
               "responses": {"200": {"description": "models"}, **ERRORS}}
    document.setdefault("paths", {}).update({
        "/v1/chat/completions": _post("Chat completion, streamed or not",
                                      ChatCompletionRequest, True),
        "/v1/completions": _post("Legacy text completion", CompletionRequest, True),
        "/v1/responses": _post("A response (Responses API), streamed or not; stored for "
                               "previous_response_id", ResponseRequest, True),
        "/v1/embeddings": _post("Embeddings (float or base64)", EmbeddingRequest, False),
        "/v1/models": {"get": {**listing, "summary": "List the public model names"}},
        "/v1/models/{model}": {"get": {**listing, "summary": "One model", "parameters": [
            {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]}},
    })
    return add_messages_routes(document)

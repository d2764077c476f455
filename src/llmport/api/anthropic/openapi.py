"""OpenAPI description of ``/v1/messages`` and ``/v1/messages/count_tokens`` for ``/docs``.

Like the OpenAI routes these are bare ASGI, so FastAPI cannot describe them;
these models document the fields the gateway reads and translates.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class MessageParam(_Open):
    role: Literal["user", "assistant", "system"]
    content: str | list[dict[str, Any]] = Field(
        description="a string, or content blocks: text, image (base64 or url), document, "
                    "tool_use, tool_result")


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class CountTokensRequest(_Open):
    model: str = Field(description="any public model name from GET /v1/models")
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stream: bool = False
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    metadata: dict[str, Any] | None = None


ERROR = {"type": "object", "required": ["type", "error"], "properties": {
    "type": {"const": "error"}, "error": {"type": "object", "required": ["type", "message"],
                                         "properties": {"type": {"type": "string"},
                                                        "message": {"type": "string"}}}}}


def _post(summary: str, model: type[BaseModel], ok: dict[str, Any]) -> dict[str, Any]:
    errors = {str(status): {"description": text, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/MessagesErrorEnvelope"}}}}
        for status, text in [(400, "invalid request"), (401, "missing or wrong API key"),
                             (404, "unknown model"), (429, "rate limited"),
                             (529, "upstream overloaded")]}
    return {"post": {
        "tags": ["anthropic"], "summary": summary, "security": [{"x-api-key": []}, {"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
        "responses": {"200": ok, **errors}}}


def add_messages_routes(document: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (MessagesRequest, CountTokensRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["MessagesErrorEnvelope"] = ERROR
    components.setdefault("securitySchemes", {})["x-api-key"] = {
        "type": "apiKey", "in": "header", "name": "x-api-key"}
    message = {"description": "a Messages API message, or its event stream", "content": {
        "application/json": {"schema": {"type": "object"}},
        "text/event-stream": {"schema": {"type": "string"}, "description":
                              "message_start, content_block_start/delta/stop, ping, "
                              "message_delta, message_stop (or error)"}}}
    count = {"description": "`{\"input_tokens\": n}`; header x-llmport-token-count says "
                            "`exact` or `estimate`",
             "content": {"application/json": {"schema": {"type": "object"}}}}
    document.setdefault("paths", {}).update({
        "/v1/messages": _post("Anthropic Messages API, for any model", MessagesRequest, message),
        "/v1/messages/count_tokens": _post("Count a Messages request's input tokens",
                                           CountTokensRequest, count),
    })
    return document

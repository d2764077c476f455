"""``GET /v1/models`` for Messages clients, who send ``anthropic-version`` on every request.

The OpenAI route answers (key, allow-list and all); this wrapper re-renders its
answer in the Messages API's shape (``ModelInfo`` objects in a page with
``has_more``, errors in the Messages envelope). Other clients get the OpenAI
route untouched; listing models is not a hot path, so the re-rendering is cheap
enough.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from llmport.api.asgi import ASGIApp, Message, Receive, Scope, Send

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


class MessagesModelsRoute:
    def __init__(self, openai_route: ASGIApp) -> None:
        self.openai_route = openai_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not any(key == b"anthropic-version" for key, _ in scope["headers"]):
            await self.openai_route(scope, receive, send)
            return
        start: Message = {}
        parts: list[bytes] = []

        async def reshape(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message  # sent with the body, once its length is known
                return
            parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = _reshape(start["status"], orjson.loads(b"".join(parts) or b"{}"))
            start["headers"] = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            start["headers"].append((b"content-length", str(len(body)).encode()))
            await send(start)
            await send({"type": "http.response.body", "body": body})

        await self.openai_route(scope, receive, reshape)


def _reshape(status: int, body: dict[str, Any]) -> bytes:
    if status >= 400:
        error = body.get("error") or {}
        kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return orjson.dumps({"type": "error", "error": {"type": kind,
                                                        "message": error.get("message", "")}})
    if body.get("object") != "list":
        return orjson.dumps(_model_info(body))
    models = [_model_info(m) for m in body.get("data") or ()]
    return orjson.dumps({"data": models, "has_more": False,
                         "first_id": models[0]["id"] if models else None,
                         "last_id": models[-1]["id"] if models else None})


def _model_info(model: dict[str, Any]) -> dict[str, Any]:
    created = datetime.fromtimestamp(int(model.get("created") or 0), UTC)
    return {"type": "model", "id": model["id"], "display_name": model["id"],
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"), "lifecycle": "active"}

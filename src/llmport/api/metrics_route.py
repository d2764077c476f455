"""``GET /metrics``: Prometheus exposition, optionally behind the master key."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from llmport.api.asgi import Receive, Scope, Send, request_id_from, send_response
from llmport.errors import AuthenticationError, LLMPortError
from llmport.gateway.context import CallContext
from llmport.gateway.gateway import Gateway
from llmport.observability.metrics import Metrics
from llmport.types import Endpoint


class MetricsRoute:
    def __init__(self, gateway: Gateway, metrics: Metrics, require_auth: bool) -> None:
        self.gateway = gateway
        self.metrics = metrics
        self.require_auth = require_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"x-request-id", request_id_from(scope["headers"]).encode())]
        if self.require_auth:
            ctx = CallContext("metrics", Endpoint.CHAT, {}, None, "", headers=scope["headers"])
            try:
                principal = await self.gateway.authenticator.authenticate(ctx)
                if not principal.is_admin and not self.gateway.authenticator.open_mode:
                    raise AuthenticationError("Metrics need the master key.")
            except LLMPortError as exc:
                await send_response(send, exc.status_code, exc.openai_json(), headers)
                return
        self.gateway.events.drain()  # every request answered before the scrape is counted
        await send_response(send, 200, self.metrics.exposition(), headers,
                            CONTENT_TYPE_LATEST.encode())

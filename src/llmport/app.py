"""create_app(config): the ASGI application.

The hot proxy routes are bare-ASGI handlers looked up in a dict by
(method, path); everything else (health, readiness, docs, admin, and the
errors for unknown routes) is a FastAPI application behind them, which also
runs the lifespan that starts and stops the gateway.
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import perf_counter

from fastapi import FastAPI

from llmport.api.anthropic.count_tokens import CountTokensRoute
from llmport.api.anthropic.dialect import MessagesDialect
from llmport.api.anthropic.models import MessagesModelsRoute
from llmport.api.asgi import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    request_id_from,
    send_response,
)
from llmport.api.jobs.mount import Jobs
from llmport.api.management import management_app
from llmport.api.metrics_route import MetricsRoute
from llmport.api.openai.dialect import OpenAIDialect
from llmport.api.openai.models import PREFIX as MODELS_PREFIX
from llmport.api.openai.models import ModelsRoute
from llmport.api.openai.validation import validate_chat, validate_completion, validate_embedding
from llmport.api.proxy import ProxyRoute
from llmport.api.responses.conversations import conversations_router
from llmport.api.responses.dialect import ResponsesDialect
from llmport.api.responses.routes import responses_router
from llmport.config import Config, load_config
from llmport.db.conversations import ConversationTables
from llmport.db.responses import ResponseTables, purge_every_hour
from llmport.errors import InvalidRequestError
from llmport.gateway.gateway import Gateway
from llmport.observability.logging import configure_logging
from llmport.observability.setup import Observability
from llmport.types import Endpoint

GC_YOUNG_THRESHOLD = 10_000  # see the lifespan


class LLMPortApp:
    """Dispatches hot routes directly; hands the rest to the FastAPI app."""

    def __init__(self, gateway: Gateway, fallback: FastAPI) -> None:
        self.gateway = gateway
        self.fallback = fallback
        self.observability: Observability | None = None
        self.routes: dict[tuple[str, str], ASGIApp] = {}
        self.prefixes: list[tuple[str, str, ASGIApp]] = []

    def route(self, method: str, path: str, handler: ASGIApp, *, v1_optional: bool = True) -> None:
        self.routes[(method, path)] = handler
        if v1_optional and path.startswith("/v1/"):
            self.routes[(method, path[3:])] = handler

    def prefix(self, method: str, prefix: str, handler: ASGIApp) -> None:
        self.prefixes.append((method, prefix, handler))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is None:
                for method, prefix, candidate in self.prefixes:
                    if scope["method"] == method and scope["path"].startswith(prefix):
                        handler = candidate
                        break
            if handler is not None:
                await handler(scope, receive, send)
                return
            allowed = [m for (m, path) in self.routes if path == scope["path"]]
            if allowed:
                await _method_not_allowed(scope, send, allowed)
                return
            await self.fallback(scope, receive, _with_request_headers(scope, send))
            return
        await self.fallback(scope, receive, send)


async def _method_not_allowed(scope: Scope, send: Send, allowed: list[str]) -> None:
    error = InvalidRequestError(f"Method {scope['method']} is not allowed for {scope['path']}; "
                                f"use {', '.join(allowed)}.", code="method_not_allowed")
    headers = [(b"x-request-id", request_id_from(scope["headers"]).encode()),
               (b"allow", ", ".join(allowed).encode())]
    anthropic = scope["path"].startswith(("/v1/messages", "/messages"))
    await send_response(send, 405, error.anthropic_json() if anthropic else error.openai_json(),
                        headers)


def _with_request_headers(scope: Scope, send: Send) -> Send:
    """Give non-proxy responses the same ``x-request-id`` and overhead headers."""
    request_id = request_id_from(scope["headers"]).encode()
    started = perf_counter()

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            overhead = b"%.3f" % ((perf_counter() - started) * 1000)
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id),
                                  (b"x-llmport-overhead-ms", overhead)]
        await send(message)

    return send_with_headers


def create_app(config: Config | None = None) -> LLMPortApp:
    config = config or load_config(None)
    gateway = Gateway(config)
    observability = Observability(gateway, config)
    jobs = Jobs(gateway)
    stored = ResponseTables(gateway.db.sessions) if gateway.db is not None else None
    conversations = ConversationTables(gateway.db.sessions) if gateway.db is not None else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        await observability.start()
        jobs.start()
        days = config.responses.retention_days
        retention = (asyncio.create_task(purge_every_hour(stored, days))
                     if stored is not None and days is not None else None)
        # Everything built at start-up lives as long as the process: move it out of the
        # collector's reach, so the full collections that request garbage triggers do
        # not walk the whole heap (about 10% of a request's CPU on the benchmark).
        gc.collect()
        gc.freeze()
        # The default young-generation threshold (700 net new containers) is crossed
        # every few requests by what the requests in flight hold; each crossing walks
        # them all. Ten thousand lets short-lived objects die first: the collector's
        # share of a request's CPU falls from about 6% to 2% on the benchmark.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            if retention is not None:
                retention.cancel()
            await jobs.aclose()
            await observability.stop()
            await gateway.aclose()

    app = LLMPortApp(gateway, management_app(gateway, lifespan))
    for router in jobs.routers:
        app.fallback.include_router(router)
    app.observability = observability
    metrics = config.observability.metrics
    if observability.metrics is not None and metrics.port is None:
        route = MetricsRoute(gateway, observability.metrics, metrics.require_auth)
        app.route("GET", metrics.path, route, v1_optional=False)
    openai_routes = {
        "/v1/chat/completions": (Endpoint.CHAT, validate_chat),
        "/v1/completions": (Endpoint.COMPLETIONS, validate_completion),
        "/v1/embeddings": (Endpoint.EMBEDDINGS, validate_embedding),
    }
    for path, (endpoint, validate) in openai_routes.items():
        app.route("POST", path, ProxyRoute(gateway, endpoint, OpenAIDialect(validate)))
    app.route("POST", "/v1/messages", ProxyRoute(gateway, Endpoint.CHAT, MessagesDialect()))
    app.route("POST", "/v1/responses", ProxyRoute(gateway, Endpoint.CHAT,
                                                  ResponsesDialect(stored, conversations,
                                                                   jobs.file_search)))
    if stored is not None and conversations is not None:
        app.fallback.include_router(responses_router(gateway, stored))
        app.fallback.include_router(conversations_router(gateway, conversations))
    app.route("POST", "/v1/messages/count_tokens", CountTokensRoute(gateway))
    models = MessagesModelsRoute(ModelsRoute(gateway))  # Messages clients get their shape
    app.route("GET", "/v1/models", models)
    app.prefix("GET", MODELS_PREFIX, models)
    app.prefix("GET", MODELS_PREFIX[3:], models)
    return app


def app_from_env() -> LLMPortApp:
    """Factory for ``uvicorn --factory`` and worker processes: config from ``LLMPORT_CONFIG``."""
    config = load_config(os.environ.get("LLMPORT_CONFIG") or None)
    configure_logging(config.logging.level, config.logging.format)
    return create_app(config)

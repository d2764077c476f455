"""The FastAPI application behind the hot routes: health, readiness, docs, unknown routes."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from llmport import __version__
from llmport.api.admin.routes import admin_router
from llmport.api.openapi_docs import add_proxy_routes
from llmport.api.webui.routes import add_web_ui
from llmport.errors import InvalidRequestError, LLMPortError, NotFoundError
from llmport.gateway.gateway import Gateway

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def management_app(gateway: Gateway, lifespan: Lifespan) -> FastAPI:
    app = FastAPI(title="llmport", version=__version__, lifespan=lifespan)

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Config loaded and stores reachable",
             responses={503: {"description": "not ready"}})
    async def readyz() -> Response:
        stores = await gateway.check_stores() if gateway.ready else {}
        ready = gateway.ready and all(stores.values())
        body: dict[str, Any] = {
            "status": "ready" if ready else ("starting" if not gateway.ready else "degraded"),
            "stores": stores,
            "models": gateway.config.model_names,
            "deployments": [d.health() for d in gateway.router.deployments],
        }
        return Response(orjson.dumps(body), status_code=200 if ready else 503,
                        media_type="application/json")

    if gateway.db is not None:
        app.include_router(admin_router(gateway))
    if gateway.config.server.ui:
        add_web_ui(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_proxy_routes(get_openapi(
                title=app.title, version=app.version, routes=app.routes,
                description="OpenAI-compatible LLM gateway"))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            error: LLMPortError = NotFoundError(
                f"Invalid URL ({request.method} {request.url.path})", code="unknown_url")
        elif exc.status_code == 405:
            error = InvalidRequestError(
                f"Method {request.method} is not allowed for {request.url.path}",
                code="method_not_allowed")
        else:
            error = (InvalidRequestError if exc.status_code < 500 else LLMPortError)(
                str(exc.detail))
        return render(request, error, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return render(request, InvalidRequestError(f"{param}: {first['msg']}", param=param), 400)

    @app.exception_handler(LLMPortError)
    async def gateway_error(request: Request, exc: LLMPortError) -> Response:
        return render(request, exc, exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # A bug still answers in the envelope (Starlette re-raises it afterwards, so the
        # server logs it with its traceback), as the proxy routes do.
        return render(request, LLMPortError("The gateway failed to process the request.",
                                            code="internal_error"), 500)

    return app


def render(request: Request, error: LLMPortError, status: int) -> Response:
    anthropic = request.url.path.startswith(("/v1/messages", "/messages"))
    body = error.anthropic_json() if anthropic else error.openai_json()
    return Response(body, status_code=status, media_type="application/json",
                    headers=error.headers)

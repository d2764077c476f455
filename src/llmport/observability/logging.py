"""Structured logs: JSON in production, readable console in development."""

from __future__ import annotations

import logging
import re
import sys
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from llmport.observability.events import RequestFinished, RequestStarted

if TYPE_CHECKING:
    from llmport.gateway.context import CallContext


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (structlog.processors.JSONRenderer() if fmt == "json"
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


class AccessLog:
    """Subscriber: one line per finished request (never the key, never the body)."""

    def __init__(self) -> None:
        self._log = structlog.get_logger("llmport.access")

    def __call__(self, event: object) -> None:
        if not isinstance(event, RequestFinished):
            return
        usage = event.usage
        self._log.info(
            "request", request_id=event.request_id, endpoint=event.endpoint.value,
            model=event.model, served_model=event.served_model, deployment=event.deployment,
            principal=event.principal_id, stream=event.stream, status=event.status,
            error=event.error_type, attempts=event.attempts,
            latency_ms=round(event.latency_s * 1000, 2),
            overhead_ms=round(event.overhead_s * 1000, 3),
            ttft_ms=round(event.ttft_s * 1000, 2) if event.ttft_s is not None else None,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            trace_id=event.trace_id,
        )


SECRET_PATTERNS = (
    r"sk-[A-Za-z0-9_\-]{8,}",  # API keys in the common sk-… form
    r"(?i)bearer\s+[A-Za-z0-9._~+/=\-]+",
    r'(?i)"(?:api[_-]?key|authorization|password|secret|token)"\s*:\s*"[^"]*"',
)


class BodyLog:
    """Subscriber: request and response bodies, when explicitly enabled, with secrets masked.

    Bodies are read from the request's context, kept from its start to its finish.
    """

    def __init__(self, redact: list[str]) -> None:
        self._patterns = [re.compile(p) for p in (*SECRET_PATTERNS, *redact)]
        self._open: dict[str, CallContext] = {}
        self._log = structlog.get_logger("llmport.bodies")

    def __call__(self, event: object) -> None:
        if isinstance(event, RequestStarted):
            event.ctx.state["capture_response"] = True
            self._open[event.ctx.request_id] = event.ctx
        elif isinstance(event, RequestFinished):
            ctx = self._open.pop(event.request_id, None)
            if ctx is None:
                return
            response = ctx.state.get("response_body")
            self._log.info("bodies", request_id=event.request_id, status=event.status,
                           request=self.mask(orjson.dumps(ctx.body).decode()),
                           response=self.mask(response.decode("utf-8", "replace"))
                           if isinstance(response, bytes) else None)

    def mask(self, text: str) -> str:
        for pattern in self._patterns:
            text = pattern.sub("[REDACTED]", text)
        return text

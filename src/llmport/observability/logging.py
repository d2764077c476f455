"""Structured logs: JSON in production, readable console in development."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from llmport.observability.events import RequestFinished


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
        )

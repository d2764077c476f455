"""Structured logs: JSON in production, readable console in development."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Iterable
from time import perf_counter
from typing import Any

import orjson
import structlog

from llmport.observability.events import RequestFinished, RequestStarted


def resolved_format(fmt: str) -> str:
    """``auto``: readable console lines on a terminal, JSON otherwise."""
    if fmt == "auto":
        return "console" if sys.stderr.isatty() else "json"
    return fmt


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    fmt = resolved_format(fmt)
    renderer: Any = (structlog.processors.JSONRenderer(serializer=_orjson_text) if fmt == "json"
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


def _orjson_text(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


_THREE_DIGITS = tuple(f"{n:03d}" for n in range(1000))


class JSONLines:
    """JSON lines for stderr, written in batches: one write per ~50 ms, not per request.

    The access log is the one line every request writes; rendering it with orjson and
    batching the writes costs a fraction of a structlog call and a syscall per line.
    ``flush`` (at shutdown, and on a timer) writes what is pending.
    """

    DELAY = 0.05

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream if stream is not None else sys.stderr.buffer
        self._pending: list[bytes] = []
        self._stamp_milli = self._stamp_second = -1
        self._stamp_prefix = self._stamp = ""

    def timestamp(self, at: float | None = None) -> str:
        """``at`` (seconds since the epoch; now by default) in ISO 8601 (UTC) to the
        millisecond, as access logs usually are.

        The date and time are formatted once a second, the milliseconds once per
        millisecond: at thousands of requests a second most lines share the previous
        line's stamp, which cost a fifth of the line when formatted each time.
        """
        milli = int((time.time() if at is None else at) * 1000)
        if milli != self._stamp_milli:
            self._stamp_milli = milli
            second, rest = divmod(milli, 1000)
            if second != self._stamp_second:
                self._stamp_second = second
                self._stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._stamp = self._stamp_prefix + _THREE_DIGITS[rest] + "Z"
        return self._stamp

    def extend(self, lines: Iterable[bytes]) -> None:
        """Rendered lines (each ending in a newline), written with the next batch."""
        pending = self._pending
        first = not pending
        pending.extend(lines)
        if first and pending:  # the first of a batch: schedule its write
            try:
                asyncio.get_running_loop().call_later(self.DELAY, self.flush)
            except RuntimeError:  # no loop (tests calling it directly): write at once
                self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        data, self._pending = b"".join(self._pending), []
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed: nothing sensible left to do
            pass


class AccessLog:
    """Subscriber: one line per finished request (never the key, never the body).

    It takes finished requests in batches, off the request path (``EventBus``). In JSON
    mode the lines are rendered here, with the fields structlog would give them, each
    stamped with the time its request finished (not the time it is rendered), and
    written in batches (``JSONLines``); on a console they go through structlog, stamped
    as they are logged (at most ``EventBus.DELAY`` later).
    Every request makes a line, so the JSON line is made of two parts: the fields that
    vary per request (ids, times, tokens), rendered each time, and the rest (model,
    deployment, principal, status…), rendered once per combination and kept. Rendering
    all sixteen fields each time cost the subscriber about 40% more instructions.
    """

    MAX_SHARED = 4096  # rendered combinations kept; past it, the cache starts over

    def __init__(self, json_lines: JSONLines | None = None) -> None:
        self._log = structlog.get_logger("llmport.access")
        self.lines = json_lines
        self._shared: dict[tuple[Any, ...], bytes] = {}
        self.batch_handlers = {RequestFinished: self.log}

    def log(self, events: list[RequestFinished]) -> None:
        lines = self.lines
        if lines is None:
            for event in events:
                self._log.info("request", **self.fields(event))
            return
        all_shared = self._shared
        clock = time.time() - perf_counter()  # perf_counter readings → the wall clock
        rendered = []
        milli = -1
        stamp = ""
        for event in events:
            ctx = event.ctx  # read directly: the event's properties cost a call each
            key = (ctx.endpoint, ctx.model, ctx.served_model, ctx.deployment, ctx.principal.id,
                   ctx.stream, event.status, event.error_type, ctx.attempts)
            shared = all_shared.get(key)
            if shared is None:
                shared = self._render_shared(key)
            usage = ctx.usage
            first_token_at = ctx.first_token_at
            # The stamp changes once a millisecond: most lines of a batch share the last one's
            # (checked here, as a call per line to see that cost more than the check).
            at = clock + ctx.started + event.latency_s
            if int(at * 1000) != milli:
                milli = int(at * 1000)
                stamp = lines.timestamp(at)
            # int(x + 0.5) / 10**n rounds these non-negative times half up to n decimals, at
            # a third of round(x, n)'s cost (which goes through a decimal conversion).
            line = orjson.dumps({
                "timestamp": stamp,
                "request_id": ctx.request_id,
                "latency_ms": int(event.latency_s * 100_000 + 0.5) / 100,
                "overhead_ms": int(event.overhead_s * 1_000_000 + 0.5) / 1000,
                "ttft_ms": None if first_token_at is None
                else int((first_token_at - ctx.started) * 100_000 + 0.5) / 100,
                "prompt_tokens": None if usage is None else usage.prompt_tokens,
                "completion_tokens": None if usage is None else usage.completion_tokens,
                "trace_id": ctx.trace_id})
            rendered.append(line[:-1] + shared)  # {…per request…, …shared…}\n
        lines.extend(rendered)

    def _render_shared(self, key: tuple[Any, ...]) -> bytes:
        """``,"event":…}`` and a newline: the fields of ``key`` as the end of a JSON object."""
        endpoint, model, served, deployment, principal, stream, status, error, attempts = key
        rendered = orjson.dumps({
            "event": "request", "level": "info", "endpoint": endpoint, "model": model,
            "served_model": served, "deployment": deployment, "principal": principal,
            "stream": stream, "status": status, "error": error, "attempts": attempts},
            option=orjson.OPT_APPEND_NEWLINE)
        if len(self._shared) >= self.MAX_SHARED:
            self._shared.clear()
        shared = self._shared[key] = b"," + rendered[1:]
        return shared

    @staticmethod
    def fields(event: RequestFinished) -> dict[str, Any]:
        """The line's fields (the JSON line has these, with ``event``, ``level``, ``timestamp``)."""
        ctx = event.ctx
        usage = ctx.usage
        ttft = ctx.ttft_s
        return {
            "request_id": ctx.request_id, "endpoint": ctx.endpoint,
            "model": ctx.model, "served_model": ctx.served_model,
            "deployment": ctx.deployment, "principal": ctx.principal.id,
            "stream": ctx.stream, "status": event.status, "error": event.error_type,
            "attempts": ctx.attempts,
            "latency_ms": int(event.latency_s * 100_000 + 0.5) / 100,
            "overhead_ms": int(event.overhead_s * 1_000_000 + 0.5) / 1000,
            "ttft_ms": int(ttft * 100_000 + 0.5) / 100 if ttft is not None else None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "trace_id": ctx.trace_id,
        }


SECRET_PATTERNS = (
    r"sk-[A-Za-z0-9_\-]{8,}",  # API keys in the common sk-… form
    r"(?i)bearer\s+[A-Za-z0-9._~+/=\-]+",
    r'(?i)"(?:api[_-]?key|authorization|password|secret|token)"\s*:\s*"[^"]*"',
)


class BodyLog:
    """Subscriber: request and response bodies, when explicitly enabled, with secrets masked.

    Bodies are read from the request's context when it finishes; at its start the
    context is told to keep the response body.
    """

    handles = (RequestStarted, RequestFinished)

    def __init__(self, redact: list[str]) -> None:
        self._patterns = [re.compile(p) for p in (*SECRET_PATTERNS, *redact)]
        self._log = structlog.get_logger("llmport.bodies")

    def __call__(self, event: object) -> None:
        if isinstance(event, RequestStarted):
            event.ctx.state["capture_response"] = True
        elif isinstance(event, RequestFinished):
            ctx = event.ctx
            if not ctx.state.get("capture_response"):
                return
            response = ctx.state.get("response_body")
            self._log.info("bodies", request_id=ctx.request_id, status=event.status,
                           request=self.mask(orjson.dumps(ctx.body).decode()),
                           response=self.mask(response.decode("utf-8", "replace"))
                           if isinstance(response, bytes) else None)

    def mask(self, text: str) -> str:
        for pattern in self._patterns:
            text = pattern.sub("[REDACTED]", text)
        return text

"""OpenTelemetry tracing, as a subscriber to the gateway's events. Off by default.

One trace per request: a ``llmport.request`` server span (child of the
client's W3C ``traceparent`` when it sent one) with children for
authentication, each policy, each upstream attempt (a client span with the
GenAI semantic-convention attributes, whose context is sent upstream as
``traceparent``) and the streaming of the answer. The OTLP exporter reads the
standard ``OTEL_EXPORTER_OTLP_*`` environment variables. This module is
imported only when tracing is enabled, so it costs nothing when off.

Why not ``tracer.start_span``: an SDK span costs about 16 µs to start and end
(sampler, context objects, locked attribute containers, processor hooks), five
of them a third of a request's CPU. A request's spans are all known when it
finishes, so the request path only notes ids and timestamps, and
``_finished`` builds the finished ``ReadableSpan`` objects (about 2 µs each)
and hands them to the span processors (``on_end``; they never see
``on_start``, as no live span exists). Sampling matches the SDK's
``ParentBased(TraceIdRatioBased)``; ids are random, as the SDK's id generator makes them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llmport import __version__
from llmport.gateway.context import CallContext
from llmport.observability.events import (
    AttemptFinished,
    AttemptStarted,
    RequestFinished,
    RequestStarted,
)
from llmport.observability.settings import TracingConfig

OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
UNSET = Status(StatusCode.UNSET)
_LOW_64 = (1 << 64) - 1


@dataclass(slots=True)
class _Attempt:
    span_id: int
    start_ns: int
    started: AttemptStarted  # its attributes are read from it only if spans are built
    end_ns: int | None = None
    error_type: str | None = None
    status_code: int | None = None


@dataclass(slots=True)
class _Request:
    ctx: CallContext
    trace_id: int
    span_id: int
    parent: SpanContext | None  # the client's, when it sent a traceparent
    start_ns: int
    attempts: dict[int, _Attempt] = field(default_factory=dict)

    @property
    def trace_state(self) -> TraceState | None:
        return self.parent.trace_state if self.parent is not None else None

    def ns(self, perf: float) -> int:
        """A perf_counter reading of this request as wall-clock nanoseconds."""
        return self.start_ns + int((perf - self.ctx.started) * 1e9)


class Tracing:
    def __init__(self, settings: TracingConfig) -> None:
        self.resource = Resource.create({"service.name": settings.service_name})
        self.scope = InstrumentationScope("llmport", __version__)
        self.processors: list[SpanProcessor] = []
        if settings.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.add_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif settings.exporter == "console":
            self.add_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        # TraceIdRatioBased's rule: sampled when the trace id's low 64 bits fall under the bound.
        self._bound = round(settings.sample_ratio * (_LOW_64 + 1))
        self._propagator = TraceContextTextMapPropagator()
        self._open: dict[str, _Request] = {}
        # The event bus subscribes each method to its event type (EventBus.subscribe).
        self.handlers: dict[type, Callable[[Any], None]] = {
            RequestStarted: self._request_started, AttemptStarted: self._attempt_started,
            AttemptFinished: self._attempt_finished, RequestFinished: self._finished}

    def add_processor(self, processor: SpanProcessor) -> None:
        self.processors.append(processor)

    def shutdown(self) -> None:
        for processor in self.processors:
            processor.shutdown()

    def _request_started(self, event: RequestStarted) -> None:
        ctx = event.ctx
        parent = self._client_parent(ctx)
        if parent is not None:
            trace_id, sampled = parent.trace_id, parent.trace_flags.sampled
        else:
            trace_id = _new_id(128)
            sampled = (trace_id & _LOW_64) < self._bound
        ctx.trace_id = format(trace_id, "032x")
        request = _Request(ctx, trace_id, _new_id(64), parent, time.time_ns())
        if not sampled:  # still propagated upstream, as "not sampled", but nothing recorded
            ctx.state["trace_unsampled"] = request
            return
        ctx.marks = []
        self._open[ctx.request_id] = request

    def _client_parent(self, ctx: CallContext) -> SpanContext | None:
        if ctx.header(b"traceparent") is None:
            return None
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in ctx.headers
                   if k in (b"traceparent", b"tracestate")}
        context = trace.get_current_span(self._propagator.extract(carrier)).get_span_context()
        return context if context.is_valid else None

    def _attempt_started(self, event: AttemptStarted) -> None:
        ctx = event.ctx
        request = self._open.get(ctx.request_id)
        span_id = _new_id(64)
        if request is None:
            unsampled: _Request | None = ctx.state.get("trace_unsampled")
            if unsampled is not None:
                _send_upstream(ctx, unsampled, span_id, "00")
            return
        request.attempts[event.attempt] = _Attempt(span_id, time.time_ns(), event)
        _send_upstream(ctx, request, span_id, "01")  # the upstream sees this attempt's span

    def _attempt_finished(self, event: AttemptFinished) -> None:
        request = self._open.get(event.request_id)
        attempt = request.attempts.get(event.attempt) if request else None
        if attempt is None or attempt.end_ns is not None:
            return
        attempt.end_ns = time.time_ns()
        if not event.ok:
            attempt.error_type = event.error_type or "error"
        attempt.status_code = event.status

    def _finished(self, event: RequestFinished) -> None:
        request = self._open.pop(event.request_id, None)
        if request is None or not self.processors:  # no processor: no span to build
            return
        ctx = request.ctx
        end_ns = time.time_ns()
        root = SpanContext(request.trace_id, request.span_id, False, SAMPLED, request.trace_state)
        spans: list[ReadableSpan] = []

        def child(name: str, start: int, end: int, span_id: int | None = None,
                  **details: Any) -> None:
            context = SpanContext(root.trace_id, span_id or _new_id(64), False, SAMPLED,
                                  root.trace_state)
            spans.append(ReadableSpan(name, context, root, self.resource, start_time=start,
                                      end_time=end, instrumentation_scope=self.scope, **details))

        if ctx.authenticated_at is not None:
            child("llmport.auth", request.start_ns, request.ns(ctx.authenticated_at))
        marks = ctx.marks or ()
        for index, (name, began) in enumerate(marks):
            if name:  # the terminal's mark only ends the policy before it
                ended = marks[index + 1][1] if index + 1 < len(marks) else None
                child(f"llmport.policy.{name}", request.ns(began),
                      end_ns if ended is None else request.ns(ended))
        for attempt in request.attempts.values():  # cancelled ones end with the request
            child("llmport.upstream", attempt.start_ns, attempt.end_ns or end_ns,
                  attempt.span_id, attributes=_attempt_attributes(ctx, attempt),
                  kind=SpanKind.CLIENT, status=UNSET if attempt.error_type is None
                  else Status(StatusCode.ERROR, attempt.error_type))
        usage = event.usage
        attributes: dict[str, Any] = {
            "llmport.request_id": event.request_id,
            "gen_ai.request.model": event.model, "http.response.status_code": event.status,
            "llmport.served_model": event.served_model or "", "llmport.attempts": event.attempts}
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if ctx.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (ctx.finish_reason,)
        if event.stream and ctx.first_token_at is not None:
            child("llmport.stream", request.ns(ctx.first_token_at), end_ns,
                  attributes=dict(attributes))
        status = UNSET
        if event.error_type is not None:
            attributes["error.type"] = event.error_type
            status = Status(StatusCode.ERROR, event.error_message or event.error_type)
        spans.append(ReadableSpan("llmport.request", root, request.parent, self.resource,
                                  attributes, kind=SpanKind.SERVER, status=status,
                                  start_time=request.start_ns, end_time=end_ns,
                                  instrumentation_scope=self.scope))
        for processor in self.processors:
            for span in spans:
                processor.on_end(span)


def _attempt_attributes(ctx: CallContext, attempt: _Attempt) -> dict[str, Any]:
    """The GenAI semantic-convention attributes of an upstream attempt's span."""
    event = attempt.started
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATIONS.get(ctx.endpoint.value, ctx.endpoint.value),
        "gen_ai.provider.name": event.provider, "gen_ai.request.model": event.upstream_model,
        "llmport.model": event.model, "llmport.deployment": event.deployment,
        "llmport.attempt": event.attempt, "gen_ai.request.stream": ctx.stream}
    if attempt.error_type is not None:
        attributes["error.type"] = attempt.error_type
    if attempt.status_code is not None:
        attributes["http.response.status_code"] = attempt.status_code
    return attributes


def _new_id(bits: int) -> int:
    """A random non-zero trace (128 bits) or span (64 bits) id."""
    value = random.getrandbits(bits)
    while not value:
        value = random.getrandbits(bits)
    return value


def _send_upstream(ctx: CallContext, request: _Request, span_id: int, flags: str) -> None:
    # ctx.trace_id is the request's trace id, already in hex
    ctx.outbound_headers["traceparent"] = f"00-{ctx.trace_id}-{span_id:016x}-{flags}"
    if request.trace_state is not None and len(request.trace_state):
        ctx.outbound_headers["tracestate"] = request.trace_state.to_header()

"""OpenTelemetry tracing, as a subscriber to the gateway's events. Off by default.

One trace per request: a ``llmport.request`` server span (child of the
client's W3C ``traceparent`` when it sent one) with children for
authentication, each policy, each upstream attempt (a client span with the
GenAI semantic-convention attributes, whose context is sent upstream as
``traceparent``) and the streaming of the answer. The OTLP exporter reads the
standard ``OTEL_EXPORTER_OTLP_*`` environment variables. This module is
imported only when tracing is enabled, so it costs nothing when off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llmport.gateway.context import CallContext
from llmport.observability.events import (
    AttemptFinished,
    AttemptStarted,
    RequestFinished,
    RequestStarted,
)
from llmport.observability.settings import TracingConfig

OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}


@dataclass
class _Request:
    ctx: CallContext
    root: Any
    start_ns: int
    attempts: dict[int, Any] = field(default_factory=dict)

    def ns(self, perf: float) -> int:
        """A perf_counter reading of this request as wall-clock nanoseconds."""
        return self.start_ns + int((perf - self.ctx.started) * 1e9)


class Tracing:
    def __init__(self, settings: TracingConfig) -> None:
        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}), sampler=sampler)
        if settings.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif settings.exporter == "console":
            self.provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        self.tracer = self.provider.get_tracer("llmport")
        self.propagator = TraceContextTextMapPropagator()
        self._open: dict[str, _Request] = {}

    def add_processor(self, processor: SpanProcessor) -> None:
        self.provider.add_span_processor(processor)

    def shutdown(self) -> None:
        self.provider.shutdown()

    def __call__(self, event: object) -> None:
        if isinstance(event, RequestStarted):
            self._started(event.ctx)
        elif isinstance(event, AttemptStarted):
            self._attempt_started(event)
        elif isinstance(event, AttemptFinished):
            self._attempt_finished(event)
        elif isinstance(event, RequestFinished):
            self._finished(event)

    def _started(self, ctx: CallContext) -> None:
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in ctx.headers
                   if k in (b"traceparent", b"tracestate")}
        parent = self.propagator.extract(carrier) if carrier else None
        start_ns = time.time_ns()
        root = self.tracer.start_span("llmport.request", context=parent, kind=SpanKind.SERVER,
                                      start_time=start_ns,
                                      attributes={"llmport.request_id": ctx.request_id})
        span_context = root.get_span_context()
        if span_context.is_valid:
            ctx.trace_id = format(span_context.trace_id, "032x")
        ctx.marks = []
        self._open[ctx.request_id] = _Request(ctx, root, start_ns)

    def _attempt_started(self, event: AttemptStarted) -> None:
        request = self._open.get(event.ctx.request_id)
        if request is None:
            return
        ctx = event.ctx
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATIONS.get(ctx.endpoint.value, ctx.endpoint.value),
            "gen_ai.provider.name": event.provider, "gen_ai.request.model": event.upstream_model,
            "llmport.model": event.model, "llmport.deployment": event.deployment,
            "llmport.attempt": event.attempt, "gen_ai.request.stream": ctx.stream,
        }
        span = self.tracer.start_span("llmport.upstream", kind=SpanKind.CLIENT,
                                      context=trace.set_span_in_context(request.root),
                                      attributes=attributes)
        request.attempts[event.attempt] = span
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=trace.set_span_in_context(span))
        ctx.outbound_headers.update(carrier)  # the upstream sees this attempt's span

    def _attempt_finished(self, event: AttemptFinished) -> None:
        request = self._open.get(event.request_id)
        span = request.attempts.pop(event.attempt, None) if request else None
        if span is None:
            return
        if not event.ok:
            span.set_attribute("error.type", event.error_type or "error")
            span.set_status(Status(StatusCode.ERROR, event.error_type))
        if event.status is not None:
            span.set_attribute("http.response.status_code", event.status)
        span.end()

    def _finished(self, event: RequestFinished) -> None:
        request = self._open.pop(event.request_id, None)
        if request is None:
            return
        ctx, root = request.ctx, request.root
        parent = trace.set_span_in_context(root)
        if ctx.authenticated_at is not None:
            self.tracer.start_span("llmport.auth", context=parent, start_time=request.start_ns
                                   ).end(end_time=request.ns(ctx.authenticated_at))
        for name, began, ended in ctx.marks or ():
            self.tracer.start_span(f"llmport.policy.{name}", context=parent,
                                   start_time=request.ns(began)).end(end_time=request.ns(ended))
        usage = event.usage
        attributes: dict[str, Any] = {
            "gen_ai.request.model": event.model, "http.response.status_code": event.status,
            "llmport.served_model": event.served_model or "", "llmport.attempts": event.attempts}
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        if ctx.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [ctx.finish_reason]
        if event.stream and ctx.first_token_at is not None:
            stream = self.tracer.start_span("llmport.stream", context=parent,
                                            start_time=request.ns(ctx.first_token_at),
                                            attributes=attributes)
            stream.end()
        for span in request.attempts.values():  # attempts cancelled without an outcome
            span.end()
        root.set_attributes(attributes)
        if event.error_type is not None:
            root.set_attribute("error.type", event.error_type)
            root.set_status(Status(StatusCode.ERROR, event.error_message or event.error_type))
        root.end()

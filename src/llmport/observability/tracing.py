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
``_finished`` (off the request path, with other requests' ends: see events.py)
builds the finished ``ReadableSpan`` objects (about 2 µs each) and hands them to
the span processors (``on_end``; they never see
``on_start``, as no live span exists). Sampling matches the SDK's
``ParentBased(TraceIdRatioBased)``; ids are random, as the SDK's id generator makes them.
"""

from __future__ import annotations

from collections.abc import Callable
from random import getrandbits
from time import perf_counter, time_ns
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llmport import __version__
from llmport.gateway.context import CallContext
from llmport.observability.events import (
    AttemptFinished,
    AttemptStarted,
    RequestFinished,
)
from llmport.observability.settings import TracingConfig

OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
UNSET = Status(StatusCode.UNSET)
_LOW_64 = (1 << 64) - 1


class _Request:
    """One request's trace, kept on its context (``ctx.trace``) until it finishes.

    The trace id is the context's ``trace_id`` (in hex, as the logs show it).
    ``attempts`` holds each upstream attempt as (its ``AttemptStarted``, its span id in
    hex, the perf_counter reading it began at); ``outcomes`` the ``AttemptFinished`` of
    each attempt number. Plain tuples and a dict: an object per attempt cost more. Ids
    are kept in hex, as the ``traceparent`` sent upstream needs them: formatting them
    from ints there cost twice as much, and they are ints again only for the spans.
    Filled in by ``Tracing._trace``, without an ``__init__`` (a constructor call took
    about 300 ns, a bare object 45).
    """

    __slots__ = ("attempts", "outcomes", "parent", "sampled")

    parent: SpanContext | None  # the client's, when it sent a traceparent
    sampled: bool
    attempts: list[tuple[AttemptStarted, str, float]]
    outcomes: dict[int, AttemptFinished]


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
        # The event bus subscribes each method to its event type (EventBus.subscribe): an
        # attempt's start at once (its traceparent goes upstream), the rest in batches, off
        # the request path. A request's trace is made when it first needs one (its first
        # upstream attempt, or its end): the request path holds no more than ids and
        # perf_counter readings.
        self.handlers: dict[type, Callable[[Any], None]] = {
            AttemptStarted: self._attempt_started}
        self.batch_handlers: dict[type, Callable[[list[Any]], None]] = {
            AttemptFinished: self._attempts_finished, RequestFinished: self._finished}

    def add_processor(self, processor: SpanProcessor) -> None:
        self.processors.append(processor)

    def shutdown(self) -> None:
        for processor in self.processors:
            processor.shutdown()

    def _trace(self, ctx: CallContext) -> _Request:
        """The request's trace: the client's when it sent a valid traceparent, else a new one."""
        request = ctx.trace = _Request()
        parent = self._client_parent(ctx) if ctx.header(b"traceparent") is not None else None
        if parent is None:
            trace_id = getrandbits(128) or 1
            request.sampled = (trace_id & _LOW_64) < self._bound
        else:
            trace_id = parent.trace_id
            request.sampled = parent.trace_flags.sampled
        # Unsampled requests are still propagated upstream (flags 00), but nothing is recorded.
        ctx.trace_id = trace_id.to_bytes(16, "big").hex()
        request.parent = parent
        request.attempts = []
        request.outcomes = {}
        return request

    def _client_parent(self, ctx: CallContext) -> SpanContext | None:
        """The client's span context, as W3C Trace Context reads it: a repeated
        ``traceparent`` is not trusted (the trace restarts), repeated ``tracestate``
        fields are one list, joined in the order they came."""
        parents = [v for k, v in ctx.headers if k == b"traceparent"]
        if len(parents) != 1:
            return None
        carrier = {"traceparent": [parents[0].decode("latin-1")],
                   "tracestate": [v.decode("latin-1") for k, v in ctx.headers
                                  if k == b"tracestate"]}
        context = trace.get_current_span(self._propagator.extract(carrier)).get_span_context()
        return context if context.is_valid else None

    def _attempt_started(self, event: AttemptStarted) -> None:
        ctx = event.ctx
        request: _Request = ctx.trace or self._trace(ctx)
        span = (getrandbits(64) or 1).to_bytes(8, "big").hex()
        outbound = ctx.outbound_headers
        # The upstream sees this attempt's span as its parent.
        if request.sampled:
            request.attempts.append((event, span, perf_counter()))
            outbound[b"traceparent"] = f"00-{ctx.trace_id}-{span}-01".encode()
        else:
            outbound[b"traceparent"] = f"00-{ctx.trace_id}-{span}-00".encode()
        parent = request.parent
        if parent is not None and parent.trace_state:
            outbound[b"tracestate"] = parent.trace_state.to_header().encode()

    @staticmethod
    def _attempts_finished(events: list[AttemptFinished]) -> None:
        for event in events:
            request: _Request | None = event.ctx.trace
            if request is not None and request.sampled:
                request.outcomes.setdefault(event.attempt, event)  # the first outcome counts

    def _finished(self, events: list[RequestFinished]) -> None:
        """Name the trace of each request that made no attempt (the access log shows it),
        and build and hand on the spans of the sampled ones."""
        build = bool(self.processors)  # no processor: no span to build
        for event in events:
            ctx = event.ctx
            request: _Request = ctx.trace or self._trace(ctx)
            # Taken off the context: it holds attempt events, which hold the context,
            # a cycle only the garbage collector would otherwise break.
            ctx.trace = None
            if build and request.sampled:
                self._spans(event, request)

    def _spans(self, event: RequestFinished, request: _Request) -> None:
        """The request's spans, ended, to every processor."""
        ctx = event.ctx
        # ctx.started on the wall clock; the request ended latency_s after it (the batch
        # that delivers this event comes later).
        origin = time_ns() - int((perf_counter() - ctx.started) * 1e9)
        end_ns = origin + int(event.latency_s * 1e9)

        def ns(perf: float) -> int:
            return origin + int((perf - ctx.started) * 1e9)

        trace_state = request.parent.trace_state if request.parent is not None else None
        trace_id = int(cast(str, ctx.trace_id), 16)  # named by _trace
        root = SpanContext(trace_id, _new_id(), False, SAMPLED, trace_state)
        spans: list[ReadableSpan] = []

        def child(name: str, start: int, end: int, span_id: int | None = None,
                  **details: Any) -> None:
            context = SpanContext(root.trace_id, span_id or _new_id(), False, SAMPLED,
                                  trace_state)
            spans.append(ReadableSpan(name, context, root, self.resource, start_time=start,
                                      end_time=end, instrumentation_scope=self.scope, **details))

        if ctx.authenticated_at is not None:
            child("llmport.auth", origin, ns(ctx.authenticated_at))
        marks = ctx.marks or ()
        for index, (name, began) in enumerate(marks):
            if name:  # the terminal's mark only ends the policy before it
                ended = marks[index + 1][1] if index + 1 < len(marks) else None
                child(f"llmport.policy.{name}", ns(began), end_ns if ended is None else ns(ended))
        for started, span, began in request.attempts:  # cancelled ones end with the request
            outcome = request.outcomes.get(started.attempt)
            error = None if outcome is None or outcome.ok else outcome.error_type or "error"
            child("llmport.upstream", ns(began),
                  end_ns if outcome is None else ns(began + outcome.duration_s),
                  int(span, 16), attributes=_attempt_attributes(ctx, started, outcome, error),
                  kind=SpanKind.CLIENT,
                  status=UNSET if error is None else Status(StatusCode.ERROR, error))
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
            child("llmport.stream", ns(ctx.first_token_at), end_ns,
                  attributes=dict(attributes))
        status = UNSET
        if event.error_type is not None:
            attributes["error.type"] = event.error_type
            status = Status(StatusCode.ERROR, event.error_message or event.error_type)
        spans.append(ReadableSpan("llmport.request", root, request.parent, self.resource,
                                  attributes, kind=SpanKind.SERVER, status=status,
                                  start_time=origin, end_time=end_ns,
                                  instrumentation_scope=self.scope))
        for processor in self.processors:
            for readable in spans:
                processor.on_end(readable)


def _attempt_attributes(ctx: CallContext, event: AttemptStarted,
                        outcome: AttemptFinished | None, error: str | None) -> dict[str, Any]:
    """The GenAI semantic-convention attributes of an upstream attempt's span."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATIONS.get(ctx.endpoint.value, ctx.endpoint.value),
        "gen_ai.provider.name": event.provider, "gen_ai.request.model": event.upstream_model,
        "llmport.model": event.model, "llmport.deployment": event.deployment,
        "llmport.attempt": event.attempt, "gen_ai.request.stream": ctx.stream}
    if error is not None:
        attributes["error.type"] = error
    if outcome is not None and outcome.status is not None:
        attributes["http.response.status_code"] = outcome.status
    return attributes


def _new_id() -> int:
    """A random non-zero span id (64 bits), as the SDK's id generator makes them."""
    return getrandbits(64) or 1

"""Prometheus metrics: a subscriber to the gateway's events.

With several worker processes (``llmport serve --workers N``) the CLI points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start;
prometheus_client then keeps each worker's values in shared files and any
worker (or the separate metrics port, served by the supervisor) exposes the
sum over all of them. Gauges of live state (in flight, queue lengths, breaker
states) are refreshed from that state at scrape time and once a second.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Hashable
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from llmport.observability.events import (
    AttemptFinished,
    BreakerStateChanged,
    CacheLookup,
    FallbackUsed,
    GuardrailTriggered,
    QueueWaited,
    RequestFinished,
)
from llmport.observability.tallies import Tallies

LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
           30.0, 60.0)
OVERHEAD = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
REJECTIONS = {401: "unauthenticated", 402: "budget", 403: "forbidden", 429: "rate_limited"}


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self, live: Callable[[], dict[str, Any]], tenant_labels: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenant_labels = tenant_labels
        self._live = live
        self._children: dict[Hashable, Any] = {}
        self.tallies = Tallies()  # the per-request updates, batched (see tallies.py)
        self._tallies: dict[Hashable, Any] = {}  # one per labelled child
        self._bundles: dict[Hashable, tuple[Any, ...]] = {}  # tallies per finished-label set
        self._attempt_pairs: dict[Hashable, tuple[Any, Any]] = {}
        r = self.registry

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(f"llmport_{name}", doc, labels, registry=r)

        def histogram(name: str, doc: str, labels: list[str], buckets: tuple[float, ...]
                      ) -> Histogram:
            return Histogram(f"llmport_{name}", doc, labels, registry=r, buckets=buckets)

        def gauge(name: str, doc: str, labels: list[str],
                  mode: Literal["livesum", "livemax"]) -> Gauge:
            return Gauge(f"llmport_{name}", doc, labels, registry=r, multiprocess_mode=mode)

        self.requests = counter("requests_total", "Requests answered",
                                ["endpoint", "model", "deployment", "status", "error_type"])
        self.latency = histogram("request_duration_seconds", "Time to the whole answer",
                                 ["endpoint", "model", "stream"], LATENCY)
        self.ttft = histogram("time_to_first_token_seconds", "Time to the first streamed token",
                              ["model"], LATENCY)
        self.overhead = histogram("gateway_overhead_seconds",
                                  "Time the gateway itself added to a request", ["endpoint"],
                                  OVERHEAD)
        self.tokens = counter("tokens_total", "Tokens used", ["model", "tenant", "kind"])
        self.cost = counter("cost_usd_total", "Cost in US dollars", ["model", "tenant"])
        self.rejections = counter("rejections_total", "Requests refused before any upstream",
                                  ["reason"])
        self.cache = counter("cache_lookups_total", "Response cache lookups", ["model", "result"])
        self.attempts = counter("upstream_attempts_total", "Calls to upstream deployments",
                                ["deployment", "outcome"])
        self.attempt_latency = histogram("upstream_attempt_duration_seconds",
                                         "Upstream call time (to first output for streams)",
                                         ["deployment"], LATENCY)
        self.retries = counter("retries_total", "Attempts beyond a request's first", ["model"])
        self.fallbacks = counter("fallbacks_total", "Requests moved to another model",
                                 ["from_model", "to_model", "reason"])
        self.breaker_changes = counter("circuit_breaker_transitions_total",
                                       "Circuit breaker state changes", ["deployment", "state"])
        self.queue_wait = histogram("queue_wait_seconds", "Time waited for admission",
                                    ["deployment"], LATENCY)
        self.queue_rejected = counter("queue_rejections_total", "Requests refused by a full queue",
                                      ["deployment"])
        self.guardrails = counter("guardrail_actions_total",
                                  "Requests a guardrail refused, or whose text it redacted or cut",
                                  ["check", "action", "where"])
        self.malformed = counter("malformed_chunks_total", "Upstream stream events skipped",
                                 ["model"])
        self.in_flight = gauge("in_flight_requests", "Requests being answered", [], "livesum")
        self.queued = gauge("queue_length", "Requests waiting for admission", ["deployment"],
                            "livesum")
        self.breaker = gauge("circuit_breaker_state", "0 closed, 1 half-open, 2 open",
                             ["deployment"], "livemax")
        # The event bus subscribes each method to its event type (EventBus.subscribe): the
        # per-request events in batches, off the request path; the rest as they happen.
        self.batch_handlers: dict[type, Callable[[list[Any]], None]] = {
            RequestFinished: self._finished, AttemptFinished: self._attempts}
        self.handlers: dict[type, Callable[[Any], None]] = {
            FallbackUsed: self._fallback, BreakerStateChanged: self._breaker,
            QueueWaited: self._queue, CacheLookup: self._cache,
            GuardrailTriggered: self._guardrail,
        }

    def child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, cached: label resolution costs more than the update."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def _finished(self, events: list[RequestFinished]) -> None:
        tenant_labels = self.tenant_labels
        bundles = self._bundles
        for e in events:
            ctx = e.ctx  # read directly: the event's properties cost a call each
            tenant = (ctx.principal.org_id or ctx.principal.id) if tenant_labels else ""
            key = (ctx.endpoint, ctx.model, ctx.served_model, ctx.deployment, e.status,
                   e.error_type, ctx.stream, tenant)
            bundle = bundles.get(key)
            if bundle is None:
                bundle = bundles[key] = self._bundle(e, tenant)
            requests, latency, overhead, ttft, prompt, completion, cost, rejection = bundle
            # The tallies' arithmetic inline (see Tallies): a method call per update cost more.
            requests.value += 1
            value = e.latency_s
            latency.counts[bisect_left(latency.bounds, value)] += 1
            latency.total += value
            value = e.overhead_s
            overhead.counts[bisect_left(overhead.bounds, value)] += 1
            overhead.total += value
            if ttft is not None and (seconds := ctx.ttft_s) is not None:
                ttft.observe(seconds)
            if rejection is not None:
                rejection.value += 1
            if ctx.skipped_chunks:
                self.child(self.malformed, ctx.served_model or ctx.model).inc(ctx.skipped_chunks)
            usage = ctx.usage
            if usage is not None:
                prompt.value += usage.prompt_tokens
                completion.value += usage.completion_tokens
                if e.cost:
                    cost.value += e.cost
        if not self.tallies.scheduled:
            self.tallies.touch()

    def _bundle(self, e: RequestFinished, tenant: str) -> tuple[Any, ...]:
        """Every child a finished request with these labels updates, resolved once."""
        model, endpoint = e.served_model or e.model, e.endpoint.value
        rejected = e.status in REJECTIONS and e.deployment is None
        count, observe = self._counter_tally, self._histogram_tally
        return (
            count(self.requests, endpoint, e.model, e.deployment or "", str(e.status),
                  e.error_type or ""),
            observe(self.latency, endpoint, model, "true" if e.stream else "false"),
            observe(self.overhead, endpoint),
            observe(self.ttft, model) if e.stream else None,
            count(self.tokens, model, tenant, "prompt"),
            count(self.tokens, model, tenant, "completion"),
            count(self.cost, model, tenant),
            count(self.rejections, REJECTIONS[e.status]) if rejected else None,
        )

    def _counter_tally(self, metric: Any, *labels: str) -> Any:
        return self._tally(metric, labels, self.tallies.counter)

    def _histogram_tally(self, metric: Any, *labels: str) -> Any:
        return self._tally(metric, labels, self.tallies.histogram)

    def _tally(self, metric: Any, labels: tuple[str, ...], make: Callable[[Any], Any]) -> Any:
        """One tally per child, shared by every bundle that updates that child."""
        key = (id(metric), labels)
        found = self._tallies.get(key)
        if found is None:
            found = self._tallies[key] = make(self.child(metric, *labels))
        return found

    def _attempts(self, events: list[AttemptFinished]) -> None:
        pairs = self._attempt_pairs
        for e in events:
            key = (e.deployment, e.ok, e.error_type)
            pair = pairs.get(key)
            if pair is None:
                pair = pairs[key] = (
                    self._counter_tally(self.attempts, e.deployment,
                                        "ok" if e.ok else e.error_type or "error"),
                    self._histogram_tally(self.attempt_latency, e.deployment))
            count, latency = pair
            count.value += 1
            value = e.duration_s
            latency.counts[bisect_left(latency.bounds, value)] += 1
            latency.total += value
            if e.attempt > 1:
                self.child(self.retries, e.model).inc()
        if not self.tallies.scheduled:
            self.tallies.touch()

    def _fallback(self, e: FallbackUsed) -> None:
        self.child(self.fallbacks, e.from_model, e.to_model, e.reason).inc()

    def _breaker(self, e: BreakerStateChanged) -> None:
        self.child(self.breaker_changes, e.deployment, e.state).inc()
        self.child(self.breaker, e.deployment).set(BREAKER_VALUES[e.state])

    def _queue(self, e: QueueWaited) -> None:
        if e.admitted:
            self.child(self.queue_wait, e.deployment).observe(e.wait_s)
        else:
            self.child(self.queue_rejected, e.deployment).inc()

    def _cache(self, e: CacheLookup) -> None:
        self.child(self.cache, e.model, "hit" if e.hit else "miss").inc()

    def _guardrail(self, e: GuardrailTriggered) -> None:
        self.child(self.guardrails, e.check, e.action, e.where).inc()

    def refresh(self) -> None:
        """Copy live state (in flight, queues, breakers) into the gauges."""
        live = self._live()
        self.in_flight.set(live["in_flight"])
        for name, deployment in live["deployments"].items():
            self.child(self.queued, name).set(deployment["queued"])
            self.child(self.breaker, name).set(BREAKER_VALUES[deployment["breaker"]])

    def exposition(self) -> bytes:
        self.tallies.flush()
        self.refresh()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

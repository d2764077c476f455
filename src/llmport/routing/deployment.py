"""Deployment: one config entry, its provider, and what the router knows about its health."""

from __future__ import annotations

import math
from time import monotonic
from typing import TYPE_CHECKING, Any

from llmport.routing.admission import AdmissionQueue
from llmport.routing.breaker import BreakerState, CircuitBreaker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmport.config import ModelConfig
    from llmport.providers.base import Provider
    from llmport.routing.settings import BreakerConfig
    from llmport.types import Chunk

EWMA_WEIGHT = 0.3


class Deployment:
    def __init__(self, config: ModelConfig, provider: Provider, breaker: BreakerConfig) -> None:
        self.config = config
        self.provider = provider
        self.name = provider.name
        # Read for every attempt's event: plain attributes (a config model's cost a lookup each).
        self.upstream_model = config.upstream_model
        self.provider_name = config.provider
        self.breaker = CircuitBreaker(breaker)
        limit = config.max_concurrency or provider.default_max_concurrency
        self.queue = AdmissionQueue(self.name, limit, config.queue_size, config.queue_timeout)
        self.latency_s: float | None = None  # moving average: total time of non-streamed calls
        self.ttft_s: float | None = None  # moving average: time to first output of streams
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    @property
    def in_flight(self) -> int:
        return self.queue.in_flight

    @property
    def price(self) -> float:
        """For the cost-first strategy: input + output price per 1M tokens (unknown = last)."""
        pricing = self.config.pricing
        return math.inf if pricing is None else pricing.input + pricing.output

    def observe_latency(self, seconds: float, stream: bool) -> None:
        previous = self.ttft_s if stream else self.latency_s
        value = seconds if previous is None else previous + EWMA_WEIGHT * (seconds - previous)
        if stream:
            self.ttft_s = value
        else:
            self.latency_s = value

    def observe_error(self, error: BaseException) -> None:
        status = getattr(error, "status_code", None)
        prefix = f"{type(error).__name__} {status}" if status else type(error).__name__
        self.last_error = f"{prefix}: {error}"[:300]
        self.last_error_at = monotonic()

    def health(self) -> dict[str, Any]:
        """What /readyz shows operators and load balancers about this deployment."""
        since = None if self.last_error_at is None else round(monotonic() - self.last_error_at, 1)
        return {
            "name": self.name, "model": self.config.name, "priority": self.config.priority,
            "breaker": self.breaker.state.value, "healthy": self.breaker.state is not
            BreakerState.OPEN, "in_flight": self.in_flight, "queued": self.queue.waiting,
            "latency_ms": _ms(self.latency_s), "ttft_ms": _ms(self.ttft_s),
            "last_error": self.last_error, "last_error_seconds_ago": since,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class Lease:
    """A stream's hold on its deployment: the upstream iterator and the admission slot.

    Released exactly once, by whichever comes first: the relay finishing, or the
    consumer closing a stream it never started to read (a generator that never
    ran cannot clean up after itself).
    """

    __slots__ = ("deployment", "iterator", "number", "released", "started")

    def __init__(self, deployment: Deployment, iterator: AsyncIterator[Chunk],
                 started: float, number: int) -> None:
        self.deployment = deployment
        self.iterator = iterator
        self.started = started
        self.number = number  # the attempt's number within its request
        self.released = False

    def held(self) -> float:
        return monotonic() - self.started

    async def release(self) -> None:
        if self.released:
            return
        self.released = True
        self.deployment.queue.release(self.held())
        await self.iterator.aclose()  # type: ignore[attr-defined]

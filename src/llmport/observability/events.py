"""Typed events the gateway emits, and the bus subscribers attach to.

Logging, metrics, tracing and spend accounting subscribe; nothing on the
request path calls them directly. An event is built only when someone listens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmport.types import Endpoint, Usage

if TYPE_CHECKING:
    from llmport.gateway.context import CallContext


@dataclass(frozen=True, slots=True)
class RequestStarted:
    """A request arrived (before authentication). Carries its live context for tracing."""

    ctx: CallContext


@dataclass(frozen=True, slots=True)
class RequestFinished:
    """One per request, whatever its outcome (success, error, client gone)."""

    request_id: str
    endpoint: Endpoint
    dialect: str
    model: str  # as requested
    served_model: str | None  # the model that answered, after fallbacks
    deployment: str | None
    principal_id: str
    stream: bool
    status: int  # HTTP status sent; 499 when the client went away first
    error_type: str | None
    error_message: str | None
    attempts: int
    latency_s: float
    overhead_s: float
    ttft_s: float | None
    usage: Usage | None
    skipped_chunks: int = 0  # malformed upstream stream events dropped
    trace_id: str | None = None


Subscriber = Callable[[Any], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def emit(self, event: Any) -> None:
        for subscriber in self._subscribers:
            subscriber(event)


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    """A call to one deployment is about to be sent (admitted by its queue)."""

    ctx: CallContext
    attempt: int
    model: str
    deployment: str
    upstream_model: str
    provider: str


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    """One call to one deployment, successful or not (a request may make several).

    For a stream, success means its first output arrived.
    """

    request_id: str
    model: str
    deployment: str
    stream: bool
    ok: bool
    error_type: str | None
    status: int | None
    duration_s: float
    hedged: bool = False
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class CacheLookup:
    request_id: str
    model: str
    hit: bool


@dataclass(frozen=True, slots=True)
class FallbackUsed:
    request_id: str
    from_model: str
    to_model: str
    reason: str  # "error" | "context_window" | "content_policy" | "stream_rescue"


@dataclass(frozen=True, slots=True)
class BreakerStateChanged:
    deployment: str
    model: str
    previous: str
    state: str


@dataclass(frozen=True, slots=True)
class QueueWaited:
    """A request left a deployment's admission queue: admitted after a wait, or rejected."""

    deployment: str
    wait_s: float
    admitted: bool
    queued: int  # requests still waiting

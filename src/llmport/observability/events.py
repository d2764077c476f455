"""Typed events the gateway emits, and the bus subscribers attach to.

Logging, metrics, tracing and spend accounting subscribe; nothing on the
request path calls them directly. An event is built only when someone listens, and a
subscriber that raises is logged and skipped (``hook_failed``): a hook's bug costs neither
the request nor the other subscribers.

A subscriber hears an event either at once (``handlers``: what must happen on the request
path, such as the spend record, or the trace context sent upstream) or in a batch, off the
request path (``batch_handlers``: metrics, access log lines, spans). Batches are delivered
``EventBus.DELAY`` after their first event, so the per-request hooks run one after another
over many requests instead of interleaved with the requests' own work: no request waits for
them, and on the benchmark they cost about three points less of bare's throughput than the
same hooks called per event (README, Performance, issue 6).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from itertools import starmap
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

if TYPE_CHECKING:
    from llmport.gateway.context import CallContext
    from llmport.types import Endpoint, Usage


@dataclass(slots=True)
class RequestStarted:
    """A request arrived (before authentication). Carries its live context for tracing."""

    ctx: CallContext


@dataclass(slots=True)
class RequestFinished:
    """One per request, whatever its outcome (success, error, client gone).

    The event is the outcome plus the request's context, which nothing changes once
    the request has finished. Building it copies no field of the context (a copy of
    twenty fields cost more than all the metrics of a request); the properties below
    read the fields other subscribers use through, and the subscribers on the request
    path read ``ctx`` directly.
    """

    ctx: CallContext
    status: int  # HTTP status sent; 499 when the client went away first
    error_type: str | None
    error_message: str | None
    latency_s: float
    overhead_s: float
    cost: float = 0.0  # US$ charged for this request (0 for cache hits, replays, failures)

    # Batches of it are delivered after those of the request's other events (its attempts).
    batch_order: ClassVar[int] = 1

    @property
    def request_id(self) -> str:
        return self.ctx.request_id

    @property
    def endpoint(self) -> Endpoint:
        return self.ctx.endpoint

    @property
    def model(self) -> str:
        """As requested."""
        return self.ctx.model

    @property
    def served_model(self) -> str | None:
        """The model that answered, after fallbacks."""
        return self.ctx.served_model

    @property
    def deployment(self) -> str | None:
        return self.ctx.deployment

    @property
    def stream(self) -> bool:
        return self.ctx.stream

    @property
    def attempts(self) -> int:
        return self.ctx.attempts

    @property
    def usage(self) -> Usage | None:
        return self.ctx.usage

    @property
    def skipped_chunks(self) -> int:
        """Malformed upstream stream events dropped."""
        return self.ctx.skipped_chunks


Subscriber = Callable[[Any], None]
BatchSubscriber = Callable[[list[Any]], None]


class Batch:
    """The pending events of one type, and the subscribers that take them in batches.

    Emitters on the request path hold their type's ``Batch`` (``EventBus.batch``) and,
    when it has ``handlers``, add each event inline: ``batch.events.append(event)``, then
    ``bus.schedule()`` while ``bus.scheduled`` is false — as they call their listeners,
    without a method call of their own per event.

    An emitter that set ``make`` (a callable that builds the event from its fields) may
    append the event's fields instead, as a plain tuple, when no listener needs the event
    at once: the drain then builds the events, one after another with the rest of the
    batch's work, instead of each on its request's path (``RequestFinished``, priced there
    too, and ``AttemptFinished``; on the benchmark one to three points of bare's throughput
    in five runs).
    """

    __slots__ = ("events", "handlers", "make", "order")

    def __init__(self, order: int) -> None:
        self.events: list[Any] = []  # events, or (with ``make``) tuples of their fields
        self.handlers: list[BatchSubscriber] = []
        self.make: Callable[..., Any] | None = None
        self.order = order


class EventBus:
    """Delivers each event to the subscribers of its type: at once, or in batches.

    A subscriber names the event types it handles in a ``handles`` attribute (or at
    ``subscribe``); one without gets every event. A subscriber with a ``handlers``
    mapping (event type → method) has each method subscribed to its type, so an event
    reaches its method without a dispatch of its own; with a ``batch_handlers`` mapping
    (event type → method taking a list), each method gets that type's events in batches,
    ``DELAY`` seconds after the first of a batch (or at ``drain()``: before a scrape, at
    shutdown). Batches go out in the order of their types' ``batch_order`` (a request's
    end after its attempts), each type's to its subscribers in the order they subscribed.
    Emitters ask ``wants(kind)`` before building an event, so an event nobody handles is
    never built.

    The emitters of the per-request events hold ``listeners(kind)``, the live list of
    that type's subscribers, and call them themselves: ``if listeners:`` then a loop
    costs a request less than ``wants`` and ``emit`` (two method calls) for each event.
    """

    DELAY = 0.01

    def __init__(self) -> None:
        self._everything: list[Subscriber] = []
        self._by_kind: dict[type, list[Subscriber]] = {}
        self._batches: dict[type, Batch] = {}
        self._in_order: list[Batch] = []
        self.scheduled = False  # a drain is due

    def subscribe(self, subscriber: Any, *kinds: type) -> None:
        handlers = getattr(subscriber, "handlers", None)
        batch_handlers = getattr(subscriber, "batch_handlers", None)
        if (handlers is not None or batch_handlers is not None) and not kinds:
            for kind, handler in (handlers or {}).items():
                self.subscribe(handler, kind)
            for kind, handler in (batch_handlers or {}).items():
                self.batch(kind).handlers.append(handler)
            return
        kinds = kinds or tuple(getattr(subscriber, "handles", ()))
        if not kinds:
            self._everything.append(subscriber)
            for listeners in self._by_kind.values():
                listeners.append(subscriber)
            return
        for kind in kinds:
            self.listeners(kind).append(subscriber)

    def listeners(self, kind: type) -> list[Subscriber]:
        """The subscribers of ``kind``: a live list, which later subscriptions extend."""
        found = self._by_kind.get(kind)
        if found is None:
            found = self._by_kind[kind] = list(self._everything)
        return found

    def batch(self, kind: type) -> Batch:
        """``kind``'s batch: a live object, whose ``handlers`` later subscriptions extend."""
        found = self._batches.get(kind)
        if found is None:
            found = self._batches[kind] = Batch(getattr(kind, "batch_order", 0))
            self._in_order = sorted(self._batches.values(), key=lambda batch: batch.order)
        return found

    def wants(self, kind: type) -> bool:
        batch = self._batches.get(kind)
        return bool(self._by_kind.get(kind, self._everything)
                    or (batch is not None and batch.handlers))

    def emit(self, event: Any) -> None:
        for subscriber in self._by_kind.get(type(event), self._everything):
            try:
                subscriber(event)
            except Exception:
                hook_failed(subscriber, event)
        batch = self._batches.get(type(event))
        if batch is not None and batch.handlers:
            batch.events.append(event)
            if not self.scheduled:
                self.schedule()

    def schedule(self) -> None:
        """A drain ``DELAY`` from now; at once when no event loop runs (a direct call)."""
        try:
            asyncio.get_running_loop().call_later(self.DELAY, self.drain)
        except RuntimeError:
            self.drain()
            return
        self.scheduled = True

    def drain(self) -> None:
        """Hand every pending batch to its subscribers, now."""
        self.scheduled = False
        for batch in self._in_order:
            events = batch.events
            if not events:
                continue
            batch.events = []
            if batch.make is not None:
                events = _built(batch.make, events)
            for handler in batch.handlers:
                try:
                    handler(events)
                except Exception:  # the rest of this batch is lost to this subscriber only
                    hook_failed(handler, events[0], len(events))


def _built(make: Callable[..., Any], queued: list[Any]) -> list[Any]:
    """The events of a batch that holds fields (``Batch.make``); one that cannot be built
    is logged and only it is lost."""
    try:  # usually every one is a tuple of fields: built in one C loop
        return list(starmap(make, queued))
    except Exception:  # an event built on the path (not a tuple), or one that cannot be
        pass  # built: one by one (make is idempotent: the price is kept on the context)
    built = []
    for event in queued:
        try:
            built.append(make(*event) if type(event) is tuple else event)
        except Exception:
            hook_failed(make, event)
    return built


def hook_failed(subscriber: Any, event: Any, batch: int = 1) -> None:
    """A subscriber raised: logged, and the emitter goes on (the next subscriber, the
    request). Called inside the ``except`` of each delivery loop (free when nothing raises).
    For a batch, ``event`` is its first and ``batch`` how many it held."""
    ctx = getattr(event, "ctx", None)  # the request's events carry its context
    structlog.get_logger("llmport.events").exception(
        "an event subscriber failed", event_type=type(event).__name__,
        subscriber=getattr(subscriber, "__qualname__", repr(subscriber)),
        request_id=ctx.request_id if ctx is not None else getattr(event, "request_id", None),
        **({"batch": batch} if batch > 1 else {}))


@dataclass(slots=True)
class AttemptStarted:
    """A call to one deployment is about to be sent (admitted by its queue)."""

    ctx: CallContext
    attempt: int
    model: str
    deployment: str
    upstream_model: str
    provider: str


@dataclass(slots=True)
class AttemptFinished:
    """One call to one deployment, successful or not (a request may make several).

    For a stream, success means its first output arrived.
    """

    ctx: CallContext
    model: str
    deployment: str
    ok: bool
    error_type: str | None
    status: int | None
    duration_s: float
    hedged: bool = False
    attempt: int = 0

    @property
    def request_id(self) -> str:
        return self.ctx.request_id

    @property
    def stream(self) -> bool:
        return self.ctx.stream


@dataclass(slots=True)
class CacheLookup:
    request_id: str
    model: str
    hit: bool


@dataclass(slots=True)
class FallbackUsed:
    request_id: str
    from_model: str
    to_model: str
    reason: str  # "error" | "context_window" | "content_policy" | "stream_rescue"


@dataclass(slots=True)
class BreakerStateChanged:
    deployment: str
    model: str
    previous: str
    state: str


@dataclass(slots=True)
class QueueWaited:
    """A request left a deployment's admission queue: admitted after a wait, or rejected."""

    deployment: str
    wait_s: float
    admitted: bool
    queued: int  # requests still waiting


@dataclass(slots=True)
class BudgetAlert:
    """A tenant level's spend crossed its soft (alert only) or hard budget."""

    scope: str  # e.g. "key:key_3f…", "team:team_…"
    kind: str  # "soft" | "hard"
    limit: float
    spent: float
    request_id: str


@dataclass(slots=True)
class GuardrailTriggered:
    """A guardrail acted on a request: refused it, or redacted or cut its text."""

    request_id: str
    check: str  # "pii" | "injection" | "deny_patterns" | "max_input_chars" | "max_messages"
    action: str  # "blocked" | "redacted"
    where: str  # "input" | "output"
    kinds: tuple[str, ...]  # the kinds of personal data found ("email", …), if any

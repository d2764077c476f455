"""The shared-state protocol: everything replicas must agree on goes through ``StateStore``.

One process on embedded defaults uses ``MemoryStore``; many replicas share a
``RedisStore``. Rate limits, concurrency leases, budget ceilings, counters,
replay markers, idempotency records and cache-invalidation messages all go
through the same small API, so a policy never knows which backend it runs on.
Every check-and-update is one atomic step (one Lua script call in Redis), so a
limit holds exactly however many replicas share it.

Windows are sliding windows kept as ``BUCKETS`` buckets of ``window_s / BUCKETS``
seconds: usage is the sum of the buckets whose start lies within the last
``window_s`` seconds. Bursts are exact and memory stays O(BUCKETS) per key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import structlog

log = structlog.get_logger("llmport.stores")

BUCKETS = 60
MIN_RETRY_AFTER_S = 0.001
# Refusals that waiting a bucket cannot fix (leases, ceilings) suggest a short pause.
OTHER_RETRY_AFTER_S = 1.0

# The value types below are built several times per request, so they are plain slotted
# dataclasses, treated as immutable but not frozen: a frozen dataclass's __init__ sets each
# field through object.__setattr__, 3.5x the cost (about 5k instructions an object).


@dataclass(slots=True)
class WindowLimit:
    """At most `limit` units within any `window_s` seconds (sliding window)."""

    key: str
    limit: float
    amount: float
    window_s: int = 60


@dataclass(slots=True)
class LeaseLimit:
    """At most `limit` leases held at once (concurrency). A lease expires after `ttl_s` so a
    crashed replica cannot leak capacity forever."""

    key: str
    limit: int
    lease_id: str
    ttl_s: float = 600.0


@dataclass(slots=True)
class CounterCeiling:
    """Refuse when the counter `key` is already >= `ceiling` (budgets: spend so far vs budget).
    A missing counter counts as 0."""

    key: str
    ceiling: float


@dataclass(slots=True)
class ItemState:
    """One limit's state after an ``admit``: ``used`` is the usage after this admission if it was
    admitted, the current usage if refused; ``reset_s`` is the time until usage next falls (a
    window: until its oldest bucket with usage leaves; leases and ceilings: 0, unknown)."""

    key: str
    limit: float
    used: float
    reset_s: float


@dataclass(slots=True)
class Admission:
    """The outcome of ``admit``. ``refused_by`` is the key of the first item that refused,
    checking ceilings, then windows, then leases, each in the order given."""

    admitted: bool
    windows: tuple[ItemState, ...]
    leases: tuple[ItemState, ...]
    ceilings: tuple[ItemState, ...]
    refused_by: str | None
    retry_after_s: float


@dataclass(slots=True)
class Claim:
    """The outcome of claiming an idempotency key."""

    state: Literal["new", "running", "done", "conflict"]
    response: bytes | None = None


@runtime_checkable
class StateStore(Protocol):
    async def admit(self, windows: Sequence[WindowLimit] = (), leases: Sequence[LeaseLimit] = (),
                    ceilings: Sequence[CounterCeiling] = (),
                    now: float | None = None) -> Admission:
        """All-or-nothing: if every ceiling is below its value, every window has room for its
        amount (used + amount <= limit) and every lease key has fewer than `limit` live leases,
        add the window amounts and take the leases; otherwise change nothing. One atomic step
        (one Lua script call in Redis). An amount larger than the limit is refused. `now` (epoch
        seconds) is for tests; default time.time()."""
        ...

    async def settle(self, windows: Sequence[tuple[str, float, int]] = (),
                     counters: Sequence[tuple[str, float]] = (),
                     releases: Sequence[tuple[str, str]] = (), now: float | None = None) -> None:
        """After a request, in one round trip: add `delta` to window (key, delta, window_s) in
        its current bucket (a negative delta is taken from the newest buckets first, never
        taking a bucket below 0); add to counters (key, delta); release leases (key, lease_id).
        """
        ...

    async def get_counter(self, key: str) -> float | None:
        ...

    async def set_counter(self, key: str, value: float, ttl_s: float | None = None,
                          only_if_absent: bool = False) -> bool:
        """Set a counter (budget seeding uses only_if_absent=True and learns whether it won)."""
        ...

    async def delete(self, *keys: str) -> None:
        ...

    async def add_if_absent(self, key: str, ttl_s: float) -> bool:
        """True if the key was new (it now exists for ttl_s); False if it already existed."""
        ...

    async def get_value(self, key: str) -> bytes | None:
        ...

    async def set_value(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        ...

    async def claim(self, key: str, fingerprint: str, ttl_s: float,
                    running_ttl_s: float) -> Claim:
        """Atomically: no record → create {running, fingerprint} living running_ttl_s, "new";
        another fingerprint → "conflict"; running, same fingerprint → "running"; done → "done"
        with the stored response. (`ttl_s`, the done record's life, is applied by complete.)"""
        ...

    async def complete(self, key: str, fingerprint: str, response: bytes, ttl_s: float) -> None:
        """Mark the record done, storing the response, living ttl_s (not over another
        fingerprint's record)."""
        ...

    async def abandon(self, key: str, fingerprint: str) -> None:
        """Remove a running record with this fingerprint (the first attempt failed)."""
        ...

    async def publish(self, channel: str, message: bytes) -> None:
        ...

    async def subscribe(self, channel: str, callback: Callable[[bytes], None]) -> None:
        """Deliver every later message on channel to callback (called on the event loop)."""
        ...

    async def ping(self) -> bool:
        """Reachable? Never raises."""
        ...

    async def aclose(self) -> None:
        ...

    @property
    def shared(self) -> bool:
        """True when the state is shared between replicas."""
        ...


def format_number(value: float) -> str:
    """A float as Redis shows one (``5``, not ``5.0``)."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def deliver(callback: Callable[[bytes], None], channel: str, message: bytes) -> None:
    """Call one subscriber; its failure is logged and does not reach the publisher."""
    try:
        callback(message)
    except Exception:
        log.exception("subscriber_failed", channel=channel)

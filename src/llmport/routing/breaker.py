"""Circuit breaker per deployment: stop sending traffic to what is down, probe, recover.

Closed → open after ``failure_threshold`` consecutive failures, or when the
failure share over the last ``window`` seconds exceeds ``error_rate`` (with at
least ``min_requests`` outcomes). Open for ``open_seconds``, then half-open:
exactly one probe request is let through; its success closes the breaker,
its failure opens it again. Only failures that say something about the
deployment's health count (timeouts, connection errors, 429 and 5xx); a bad
request is a healthy answer.

State changes go to ``on_change`` so they can be exported and shared between
replicas; ``force_open`` and ``force_close`` apply a state learned from elsewhere
(``routing/shared_breakers.py``).

The window keeps counts per slice of 1/100 of it, not one entry per outcome: memory
stays bounded whatever the request rate (one entry per outcome held the whole
window's traffic, 30 s by default: about 8 MB per deployment at 3,000 requests/s),
at the price of outcomes leaving the window up to one slice early.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from llmport.routing.settings import BreakerConfig

SLICES_PER_WINDOW = 100


class _Slice:
    """The outcomes recorded from ``start`` for 1/SLICES_PER_WINDOW of the window."""

    __slots__ = ("failures", "outcomes", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.outcomes = 0
        self.failures = 0


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, config: BreakerConfig,
                 on_change: Callable[[BreakerState, BreakerState], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.state = BreakerState.CLOSED
        self.opened_until = 0.0
        self.consecutive_failures = 0
        self._slices: deque[_Slice] = deque()
        self._outcomes_in_window = 0
        self._failures_in_window = 0
        self._probing = False
        self.on_change = on_change
        self._clock = clock

    def available(self) -> bool:
        """Whether a request may be sent now (without claiming the half-open probe)."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return self._clock() >= self.opened_until
        return not self._probing

    def acquire(self) -> bool:
        """Claim the right to send one request; in half-open state only one probe at a time."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self._clock() < self.opened_until:
                return False
            self._set(BreakerState.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def retry_after(self) -> float:
        """Seconds until this breaker lets a probe through (0 when it already would)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self.opened_until - self._clock())
        return 0.0

    def record_success(self) -> None:
        self._probing = False
        self.consecutive_failures = 0
        self._record(True)
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._probing = False
        self.consecutive_failures += 1
        self._record(False)
        if self.state is BreakerState.HALF_OPEN or self._tripped():
            self.force_open(self.config.open_seconds)

    def release(self) -> None:
        """An attempt ended without a verdict (e.g. the client left): free the probe."""
        self._probing = False

    def force_open(self, seconds: float) -> None:
        self.opened_until = self._clock() + seconds
        if self.state is not BreakerState.OPEN:
            self._set(BreakerState.OPEN)

    def force_close(self) -> None:
        """Close on news from elsewhere (another replica's probe succeeded)."""
        self._probing = False
        self.consecutive_failures = 0
        if self.state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def _tripped(self) -> bool:
        if self.consecutive_failures >= self.config.failure_threshold:
            return True
        total = self._outcomes_in_window
        return (total >= self.config.min_requests
                and self._failures_in_window / total > self.config.error_rate)

    def _record(self, ok: bool) -> None:
        now = self._clock()
        window = self.config.window
        slices = self._slices
        if slices and now < slices[-1].start + window / SLICES_PER_WINDOW:
            current = slices[-1]
        else:
            current = _Slice(now)
            slices.append(current)
        current.outcomes += 1
        self._outcomes_in_window += 1
        if not ok:
            current.failures += 1
            self._failures_in_window += 1
        horizon = now - window
        while slices[0].start < horizon:  # never the current slice: it started after the horizon
            old = slices.popleft()
            self._outcomes_in_window -= old.outcomes
            self._failures_in_window -= old.failures

    def _set(self, state: BreakerState) -> None:
        previous, self.state = self.state, state
        if state is BreakerState.CLOSED:
            self._slices.clear()
            self._outcomes_in_window = 0
            self._failures_in_window = 0
        if self.on_change is not None:
            self.on_change(previous, state)

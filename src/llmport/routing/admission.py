"""Admission control: a concurrency cap per deployment with a priority queue in front.

Requests beyond ``limit`` wait, most urgent first (higher priority first, then
arrival order). A full queue, or a wait longer than ``timeout``, is answered
with 429 and a ``Retry-After`` estimated from recent service times.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from time import monotonic

from llmport.errors import CapacityExceededError
from llmport.types import Principal

PRIORITY_NAMES = {"high": 10, "normal": 0, "low": -10}


def parse_priority(value: bytes | None) -> int:
    """``x-llmport-priority``: high | normal | low, or an integer (higher is served first)."""
    if not value:
        return 0
    text = value.decode("latin-1").strip().lower()
    if text in PRIORITY_NAMES:
        return PRIORITY_NAMES[text]
    try:
        return max(-100, min(100, int(text)))
    except ValueError:
        return 0


def request_priority(principal: Principal, header: bytes | None) -> int:
    """A request's admission priority: its key's, which ``x-llmport-priority`` may lower.

    Only the master key and an unauthenticated gateway (no tenants to protect from each
    other) may raise it; a tenant key cannot jump ahead of the priority it was given.
    """
    if header is None:
        return principal.priority
    asked = parse_priority(header)
    if principal.kind in ("master", "anonymous"):
        return asked
    return min(asked, principal.priority)


class AdmissionQueue:
    def __init__(self, name: str, limit: int | None, size: int, timeout: float) -> None:
        self.name = name
        self.limit = limit
        self.size = size
        self.timeout = timeout
        self.in_flight = 0
        self.waiting = 0
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._service_ewma = 1.0  # seconds a slot is held, for Retry-After estimates

    async def acquire(self, priority: int = 0) -> float:
        """Take a slot, waiting if needed; returns the seconds waited."""
        if self.limit is None or (self.in_flight < self.limit and not self.waiting):
            self.in_flight += 1
            return 0.0
        if self.waiting >= self.size:
            raise CapacityExceededError(f"{self.name} is at capacity and its queue is full.",
                                        retry_after=self._retry_after(), code="queue_full")
        started = monotonic()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (-priority, next(self._order), future))
        self.waiting += 1
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            if not self._withdraw(future):
                return monotonic() - started  # the slot arrived as the wait ended
            raise CapacityExceededError(
                f"Waited {self.timeout:g}s for {self.name} without a free slot.",
                retry_after=self._retry_after(), code="queue_timeout") from None
        except asyncio.CancelledError:
            if not self._withdraw(future):
                self.release()  # handed a slot while being cancelled: pass it on
            raise
        return monotonic() - started

    def release(self, held_for: float | None = None) -> None:
        if held_for is not None:
            self._service_ewma += 0.2 * (held_for - self._service_ewma)
        while self._heap:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                self.waiting -= 1
                future.set_result(None)  # the slot moves to the waiter: in_flight unchanged
                return
        self.in_flight -= 1

    def _withdraw(self, future: asyncio.Future[None]) -> bool:
        """Leave the queue; False if the future had already been handed a slot."""
        if future.done() and not future.cancelled():
            return False
        future.cancel()
        self.waiting -= 1
        return True

    def _retry_after(self) -> float:
        per_slot = self._service_ewma / max(1, self.limit or 1)
        return max(1.0, math.ceil(per_slot * (self.waiting + 1)))

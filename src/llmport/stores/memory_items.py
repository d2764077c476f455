"""The in-process store's items: sliding windows, lease pools and idempotency records.

Plain slotted objects that ``MemoryStore`` keeps in dicts; their methods follow the
semantics of the Redis scripts (``redis_items.py``), so both backends pass one suite.
"""

from __future__ import annotations

import math
from collections import deque

from llmport.stores.base import BUCKETS, MIN_RETRY_AFTER_S

INF = math.inf


class Window:
    """Buckets oldest first (``indexes[i]`` holds ``amounts[i]``) and their running total."""

    __slots__ = ("amounts", "bucket_s", "expires", "indexes", "total")

    def __init__(self, bucket_s: float) -> None:
        self.bucket_s = bucket_s
        self.indexes: deque[int] = deque()
        self.amounts: deque[float] = deque()
        self.total = 0.0
        self.expires = 0.0

    def prune(self, current: int) -> None:
        indexes = self.indexes
        if indexes and indexes[0] <= current - BUCKETS:
            amounts = self.amounts
            left = False  # usage left the window (not only buckets given back to zero)
            while indexes and indexes[0] <= current - BUCKETS:
                indexes.popleft()
                if amounts.popleft() > 0:
                    left = True
            # Recounted rather than subtracted, so rounding cannot drift over a long life:
            # when usage left, as the Redis script recounts (the same sums, the same totals).
            if left:
                self.total = sum(amounts) if amounts else 0.0

    def add(self, current: int, amount: float) -> None:
        amount = float(amount)
        indexes = self.indexes
        # A clock that stepped back adds to the newest bucket (as the Redis script does).
        if indexes and indexes[-1] >= current:
            self.amounts[-1] += amount
        else:
            indexes.append(current)
            self.amounts.append(amount)
        self.total += amount

    def take(self, amount: float) -> None:
        """Remove ``amount`` from the newest buckets first, none below zero. A window left with
        no usage starts over (the Redis script deletes its key): no bucket, not even the
        newest, which a clock that steps back would otherwise add to."""
        amounts = self.amounts
        if not any(bucket > 0 for bucket in amounts):
            return  # no usage to take (as in the Redis script, which then keeps the window)
        i = len(amounts) - 1
        while amount > 0 and i >= 0:
            taken = min(amounts[i], amount)
            amounts[i] -= taken
            amount -= taken
            self.total -= taken  # subtracted, as the Redis script does (prune recounts)
            i -= 1
        if self.total <= 0:
            self.indexes.clear()
            amounts.clear()
            self.total = 0.0

    def reset_s(self, now: float) -> float:
        if self.total <= 0:
            return 0.0
        for index, amount in zip(self.indexes, self.amounts, strict=True):
            if amount > 0:
                reset = (index + BUCKETS) * self.bucket_s - now
                return reset if reset > 0 else 0.0
        return 0.0

    def retry_after_s(self, amount: float, limit: float, now: float, window_s: float) -> float:
        """Seconds until enough usage leaves the window for ``amount`` to fit."""
        if amount > limit:
            return float(window_s)
        need = self.total + amount - limit
        gone = 0.0
        leaves = float(window_s)
        for index, bucket in zip(self.indexes, self.amounts, strict=True):
            if bucket <= 0:
                continue
            gone += bucket
            leaves = (index + BUCKETS) * self.bucket_s - now
            if gone >= need:
                break
        return max(leaves, MIN_RETRY_AFTER_S)


class Leases:
    __slots__ = ("held", "next_expiry")

    def __init__(self) -> None:
        self.held: dict[str, float] = {}
        self.next_expiry = INF

    def prune(self, now: float) -> None:
        if now >= self.next_expiry:
            self.held = {lease: expiry for lease, expiry in self.held.items() if expiry > now}
            self.next_expiry = min(self.held.values(), default=INF)

    def take(self, lease_id: str, expiry: float) -> None:
        self.held[lease_id] = expiry
        if expiry < self.next_expiry:
            self.next_expiry = expiry


class Record:
    __slots__ = ("expires", "fingerprint", "response", "state")

    def __init__(self, state: str, fingerprint: str, response: bytes | None,
                 expires: float) -> None:
        self.state = state
        self.fingerprint = fingerprint
        self.response = response
        self.expires = expires

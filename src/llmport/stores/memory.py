"""``MemoryStore``: the shared-state protocol in this process, for one replica.

Plain dicts on one event loop, so no locks: every method runs to completion
without awaiting, which makes each call atomic. The semantics are Redis's
(the same test suite runs against both backends): windows as buckets, leases
with expiry, counters and values with optional time to live.

Expiry is checked lazily on access, and a sweep every ``sweep_interval_s``
(run by whichever call comes first after it is due) drops whatever expired
unseen, so a long-running process does not grow without bound. Window and
lease times are the callers' ``now`` (epoch seconds); times to live of values,
counters and idempotency records run on ``clock`` (monotonic by default).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from math import floor

from llmport.stores.base import (
    BUCKETS,
    OTHER_RETRY_AFTER_S,
    Admission,
    Claim,
    CounterCeiling,
    ItemState,
    LeaseLimit,
    WindowLimit,
    deliver,
    format_number,
)
from llmport.stores.memory_items import INF, Leases, Record, Window


class MemoryStore:
    """The in-process ``StateStore``."""

    def __init__(self, prefix: str = "llmport:", *, sweep_interval_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # One process needs no namespace; the prefix is kept for symmetry with RedisStore.
        self.prefix = prefix
        self._clock = clock
        self._sweep_interval_s = sweep_interval_s
        self._next_sweep = clock() + sweep_interval_s
        self._latest_now = 0.0
        self._windows: dict[str, Window] = {}
        self._leases: dict[str, Leases] = {}
        self._strings: dict[str, tuple[float | bytes, float]] = {}
        self._records: dict[str, Record] = {}
        self._subscribers: dict[str, list[Callable[[bytes], None]]] = {}

    @property
    def shared(self) -> bool:
        return False

    def __len__(self) -> int:
        """How many keys are held (expired ones included until they are seen or swept)."""
        return len(self._windows) + len(self._leases) + len(self._strings) + len(self._records)

    # --- limits -------------------------------------------------------------------------

    async def admit(self, windows: Sequence[WindowLimit] = (), leases: Sequence[LeaseLimit] = (),
                    ceilings: Sequence[CounterCeiling] = (),
                    now: float | None = None) -> Admission:
        # The hot path: called once per request for every limit of every level, so written
        # for few calls and allocations (the bucket computed once per window size).
        if now is None:
            now = time.time()
        if now > self._latest_now:
            self._latest_now = now
        mono = self._clock()
        if mono >= self._next_sweep:
            self.sweep()
        refused_by: str | None = None
        retry = 0.0

        ceiling_states: list[ItemState] = []
        strings = self._strings
        for ceiling in ceilings:
            key = ceiling.key
            entry = strings.get(key)
            if entry is None:
                value = 0.0
            elif entry[1] <= mono:  # expired (no expiry is +inf)
                del strings[key]
                value = 0.0
            else:
                raw = entry[0]
                value = raw if raw.__class__ is float else float(raw)
            if value >= ceiling.ceiling:
                if refused_by is None:
                    refused_by = key
                retry = OTHER_RETRY_AFTER_S
            ceiling_states.append(ItemState(key, ceiling.ceiling, value, 0.0))

        store = self._windows
        checked: list[tuple[WindowLimit, Window, int]] = []
        window_s = bucket_s = 0.0
        current = 0
        for limit in windows:
            if limit.window_s != window_s:
                window_s = limit.window_s
                bucket_s = window_s / BUCKETS
                current = floor(now / bucket_s)
            window = store.get(limit.key)
            if window is None:
                window = Window(bucket_s)
            elif window.indexes and window.indexes[0] <= current - BUCKETS:
                window.prune(current)
            if window.total + limit.amount > limit.limit:
                if refused_by is None:
                    refused_by = limit.key
                wait = window.retry_after_s(limit.amount, limit.limit, now, limit.window_s)
                if wait > retry:
                    retry = wait
            checked.append((limit, window, current))

        held: list[tuple[LeaseLimit, Leases]] = []
        pools = self._leases
        for lease in leases:
            pool = pools.get(lease.key)
            if pool is None:
                pool = Leases()
            elif now >= pool.next_expiry:
                pool.prune(now)
            if len(pool.held) >= lease.limit and lease.lease_id not in pool.held:
                if refused_by is None:
                    refused_by = lease.key
                if retry < OTHER_RETRY_AFTER_S:
                    retry = OTHER_RETRY_AFTER_S
            held.append((lease, pool))

        window_states: list[ItemState] = []
        lease_states: list[ItemState] = []
        if refused_by is None:
            for limit, window, current in checked:
                if not window.indexes:
                    store[limit.key] = window  # new, or emptied by a prune
                window.add(current, limit.amount)
                window.expires = now + limit.window_s + window.bucket_s
                # The oldest bucket usually has usage: skip the general search then.
                if window.amounts[0] > 0:
                    reset = (window.indexes[0] + BUCKETS) * window.bucket_s - now
                    reset = reset if reset > 0 else 0.0
                else:
                    reset = window.reset_s(now)
                window_states.append(ItemState(limit.key, limit.limit, window.total, reset))
            for lease, pool in held:
                pool.take(lease.lease_id, now + lease.ttl_s)
                if len(pool.held) == 1:
                    pools[lease.key] = pool  # new, or emptied by releases
                lease_states.append(ItemState(lease.key, lease.limit, float(len(pool.held)), 0.0))
            return Admission(True, tuple(window_states), tuple(lease_states),
                             tuple(ceiling_states), None, 0.0)
        for limit, window, _ in checked:
            window_states.append(ItemState(limit.key, limit.limit, window.total,
                                           window.reset_s(now)))
        for lease, pool in held:
            lease_states.append(ItemState(lease.key, lease.limit, float(len(pool.held)), 0.0))
        return Admission(False, tuple(window_states), tuple(lease_states), tuple(ceiling_states),
                         refused_by, retry)

    async def settle(self, windows: Sequence[tuple[str, float, int]] = (),
                     counters: Sequence[tuple[str, float]] = (),
                     releases: Sequence[tuple[str, str]] = (), now: float | None = None) -> None:
        # Once per request, like admit: helpers inlined.
        if now is None:
            now = time.time()
        if now > self._latest_now:
            self._latest_now = now
        mono = self._clock()
        if mono >= self._next_sweep:
            self.sweep()
        store = self._windows
        for key, delta, window_s in windows:
            # A zero delta changes nothing (as in the Redis script): not even an empty bucket,
            # which would become the newest, which a clock stepping back adds to.
            if delta == 0:
                continue
            bucket_s = window_s / BUCKETS
            current = floor(now / bucket_s)
            window = store.get(key)
            if window is None:
                if delta < 0:
                    continue
                window = store[key] = Window(bucket_s)
            elif window.indexes and window.indexes[0] <= current - BUCKETS:
                window.prune(current)
            if delta > 0:
                window.add(current, delta)
                window.expires = now + window_s + bucket_s
            else:
                window.take(-delta)
        strings = self._strings
        for key, delta in counters:
            entry = strings.get(key)
            if entry is None or entry[1] <= mono:  # absent or expired: counts from zero
                strings[key] = (0.0 + delta, INF)
            else:
                raw = entry[0]
                strings[key] = ((raw if raw.__class__ is float else float(raw)) + delta,
                                entry[1])
        pools = self._leases
        for key, lease_id in releases:
            pool = pools.get(key)
            if pool is not None:
                pool.held.pop(lease_id, None)
                if not pool.held:
                    del pools[key]

    # --- counters and values ------------------------------------------------------------

    async def get_counter(self, key: str) -> float | None:
        self._maybe_sweep()
        value, _ = self._live_string(key)
        return None if value is None else _as_float(value)

    async def set_counter(self, key: str, value: float, ttl_s: float | None = None,
                          only_if_absent: bool = False) -> bool:
        self._maybe_sweep()
        if only_if_absent and self._live_string(key)[0] is not None:
            return False
        self._strings[key] = (float(value), self._expiry(ttl_s))
        return True

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._strings.pop(key, None)
            self._windows.pop(key, None)
            self._leases.pop(key, None)
            self._records.pop(key, None)

    async def add_if_absent(self, key: str, ttl_s: float) -> bool:
        self._maybe_sweep()
        if self._live_string(key)[0] is not None:
            return False
        self._strings[key] = (b"1", self._expiry(ttl_s))
        return True

    async def get_value(self, key: str) -> bytes | None:
        self._maybe_sweep()
        value, _ = self._live_string(key)
        if isinstance(value, float):
            return format_number(value).encode()
        return value

    async def set_value(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        self._maybe_sweep()
        self._strings[key] = (bytes(value), self._expiry(ttl_s))

    # --- idempotency records ------------------------------------------------------------

    async def claim(self, key: str, fingerprint: str, ttl_s: float,
                    running_ttl_s: float) -> Claim:
        self._maybe_sweep()
        record = self._live_record(key)
        if record is None:
            self._records[key] = Record("running", fingerprint, None,
                                         self._clock() + running_ttl_s)
            return Claim("new")
        if record.fingerprint != fingerprint:
            return Claim("conflict")
        if record.state == "done":
            return Claim("done", record.response)
        return Claim("running")

    async def complete(self, key: str, fingerprint: str, response: bytes, ttl_s: float) -> None:
        record = self._live_record(key)
        if record is not None and record.fingerprint != fingerprint:
            return
        self._records[key] = Record("done", fingerprint, bytes(response), self._clock() + ttl_s)

    async def abandon(self, key: str, fingerprint: str) -> None:
        record = self._live_record(key)
        if record is not None and record.state == "running" and record.fingerprint == fingerprint:
            del self._records[key]

    # --- pub/sub ------------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        for callback in tuple(self._subscribers.get(channel, ())):
            deliver(callback, channel, message)

    async def subscribe(self, channel: str, callback: Callable[[bytes], None]) -> None:
        self._subscribers.setdefault(channel, []).append(callback)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._subscribers.clear()

    # --- expiry -------------------------------------------------------------------------

    def _expiry(self, ttl_s: float | None) -> float:
        return INF if ttl_s is None else self._clock() + ttl_s

    def _live_string(self, key: str) -> tuple[float | bytes | None, float]:
        entry = self._strings.get(key)
        if entry is None:
            return None, INF
        if entry[1] <= self._clock():
            del self._strings[key]
            return None, INF
        return entry

    def _live_record(self, key: str) -> Record | None:
        record = self._records.get(key)
        if record is not None and record.expires <= self._clock():
            del self._records[key]
            return None
        return record

    def _maybe_sweep(self) -> None:
        if self._clock() >= self._next_sweep:
            self.sweep()

    def sweep(self) -> None:
        """Drop everything that has expired (run periodically by the store itself)."""
        mono = self._clock()
        now = self._latest_now
        self._next_sweep = mono + self._sweep_interval_s
        self._strings = {k: e for k, e in self._strings.items() if e[1] > mono}
        self._records = {k: r for k, r in self._records.items() if r.expires > mono}
        self._windows = {k: w for k, w in self._windows.items() if w.expires > now}
        for pool in self._leases.values():
            pool.prune(now)
        self._leases = {k: p for k, p in self._leases.items() if p.held}


def _as_float(value: float | bytes) -> float:
    return value if isinstance(value, float) else float(value)

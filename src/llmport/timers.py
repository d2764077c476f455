"""Coarse timers for long timeouts, and ``asyncio.timeout``'s behaviour on them.

Every proxied request arms long timeouts that almost never fire: the router's request
budget (900 s by default) and the upstream attempt's limit (600 s). On the event loop each
is a timer handle pushed onto and removed from its heap, and ``asyncio.timeout`` adds a
Python context manager and two ``getpid()`` system calls (CPython 3.11 checks the pid in
every ``get_running_loop()``): about 8 µs of a request's CPU for the two (benchmark
machine, uvloop). Here a timeout of ``MIN_DELAY_S`` or more joins the bucket of the
whole ``TICK_S`` its deadline falls in — a dict insert, and a dict delete to cancel it —
and one loop timer wakes for the earliest bucket. A coarse timer fires after its deadline,
never before, and at most one tick late (plus the loop's own lateness); shorter timeouts
keep the loop's exact timers.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol
from weakref import WeakKeyDictionary

TICK_S = 1.0
MIN_DELAY_S = 10.0


class Cancellable(Protocol):
    def cancel(self) -> None: ...


def _nothing(*_: Any) -> None:
    pass


class CoarseTimer:
    __slots__ = ("_args", "_bucket", "_callback")

    def __init__(self, bucket: dict[CoarseTimer, None], callback: Callable[..., object],
                 args: tuple[Any, ...]) -> None:
        self._bucket: dict[CoarseTimer, None] | None = bucket
        self._callback = callback
        self._args = args

    def cancel(self) -> None:
        bucket = self._bucket
        if bucket is not None:
            self._bucket = None
            del bucket[self]
        # As the loop's handles do: the callback is often a method of the timer's owner,
        # which holds the timer (a cycle the garbage collector would otherwise have to find).
        self._callback = _nothing
        self._args = ()


class CoarseTimers:
    """One loop's coarse timers: buckets by deadline tick, and one loop timer for the earliest.

    A bucket stays (emptied) until its tick passes, however often its timers are cancelled:
    so at most ``longest timeout / tick`` of them exist, and each tick enters the heap once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float | None = None,
                 min_delay_s: float | None = None) -> None:
        # A weak reference: the loop's entry in ``_by_loop`` must not keep the loop alive.
        self._loop = weakref.proxy(loop)
        self._tick_s = TICK_S if tick_s is None else tick_s
        self._min_delay_s = MIN_DELAY_S if min_delay_s is None else min_delay_s
        self._buckets: dict[int, dict[CoarseTimer, None]] = {}
        self._ticks: list[int] = []  # a heap of the buckets' ticks
        self._wakeup_tick = math.inf  # the tick the loop timer is set for (none: inf)

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Cancellable:
        """``loop.call_at``: coarse when ``when`` is at least ``min_delay_s`` away."""
        loop = self._loop
        if when - loop.time() < self._min_delay_s:
            return loop.call_at(when, callback, *args)
        tick = math.ceil(when / self._tick_s)  # the bucket ends at or after the deadline
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = {}
            heapq.heappush(self._ticks, tick)
            if tick < self._wakeup_tick:
                self._wake_at(tick)
        timer = CoarseTimer(bucket, callback, args)
        bucket[timer] = None
        return timer

    def call_later(self, delay: float, callback: Callable[..., object],
                   *args: Any) -> Cancellable:
        return self.call_at(self._loop.time() + delay, callback, *args)

    @property
    def pending(self) -> int:
        """Coarse timers armed and not yet fired or cancelled."""
        return sum(len(bucket) for bucket in self._buckets.values())

    def _wake_at(self, tick: int) -> None:
        # The handle is not kept (it holds the loop, which must stay collectable): a loop
        # timer superseded by an earlier one finds itself stale when it fires.
        self._wakeup_tick = tick
        self._loop.call_at(tick * self._tick_s, self._fire, tick)

    def _fire(self, tick: int) -> None:
        if tick != self._wakeup_tick:
            return  # superseded
        self._wakeup_tick = math.inf
        now = self._loop.time()
        ticks = self._ticks
        while ticks and ticks[0] * self._tick_s <= now:
            bucket = self._buckets.pop(heapq.heappop(ticks))
            while bucket:  # a callback may cancel another timer of the same bucket
                timer = next(iter(bucket))
                callback, args = timer._callback, timer._args
                timer.cancel()
                try:
                    callback(*args)
                except Exception as exc:  # as the loop treats a failing callback
                    self._loop.call_exception_handler({
                        "message": "coarse timer callback failed", "exception": exc})
        if ticks:  # (a loop timer can fire a hair early: then this bucket is simply next)
            self._wake_at(ticks[0])


_by_loop: WeakKeyDictionary[asyncio.AbstractEventLoop, CoarseTimers] = WeakKeyDictionary()
# The last loop asked about (weakly) and its timers: one loop per process, in practice.
_last: tuple[Callable[[], asyncio.AbstractEventLoop | None], CoarseTimers | None] = (
    lambda: None, None)


def coarse_timers(loop: asyncio.AbstractEventLoop) -> CoarseTimers:
    """The loop's coarse timers (made at the first call)."""
    global _last
    last_loop, timers = _last
    if last_loop() is loop and timers is not None:
        return timers
    timers = _by_loop.get(loop)
    if timers is None:
        timers = _by_loop[loop] = CoarseTimers(loop)
    _last = (weakref.ref(loop), timers)
    return timers


class TaskDeadline:
    """``asyncio.timeout_at`` on coarse timers, for a known task, as a plain ``with``:
    at ``when`` the task is cancelled, and the block raises ``TimeoutError`` instead of
    ``CancelledError`` (a cancellation from elsewhere stays one)."""

    __slots__ = ("_cancelling", "_expired", "_task", "_timer", "_timers", "_when")

    def __init__(self, task: asyncio.Task[Any], when: float,
                 timers: CoarseTimers | None = None) -> None:
        self._task = task
        self._when = when
        self._expired = False
        self._timers = coarse_timers(task.get_loop()) if timers is None else timers

    def __enter__(self) -> TaskDeadline:
        self._cancelling = self._task.cancelling()
        self._timer = self._timers.call_at(self._when, self._expire)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._timer.cancel()
        if self._expired and self._task.uncancel() <= self._cancelling \
                and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    @property
    def expired(self) -> bool:
        return self._expired

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

"""The circuit breaker and the admission queue on their own, with a controlled clock."""

from __future__ import annotations

import asyncio

import pytest

from llmport.errors import CapacityExceededError
from llmport.routing.admission import AdmissionQueue, parse_priority, request_priority
from llmport.routing.breaker import BreakerState, CircuitBreaker
from llmport.routing.settings import BreakerConfig
from llmport.types import ANONYMOUS, Principal


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(**settings: float) -> tuple[CircuitBreaker, Clock, list[tuple[str, str]]]:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(BreakerConfig(**settings),  # type: ignore[arg-type]
                       lambda old, new: changes.append((old.value, new.value)), clock)
    return b, clock, changes


def test_opens_after_consecutive_failures_and_probes_once() -> None:
    b, clock, changes = breaker(failure_threshold=3, open_seconds=10)
    for _ in range(2):
        assert b.acquire()
        b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.acquire() and not b.available()
    assert b.retry_after() == 10
    clock.now += 10
    assert b.available() and b.acquire()  # the probe
    assert b.state is BreakerState.HALF_OPEN
    assert not b.acquire()  # one probe at a time
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 10
    assert b.acquire()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.acquire()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open"),
                       ("open", "half_open"), ("half_open", "closed")]


def test_error_rate_over_the_window_opens_it() -> None:
    b, clock, _ = breaker(failure_threshold=100, error_rate=0.5, min_requests=10, window=30)
    for i in range(10):
        clock.now += 1
        b.record_failure() if i % 2 else b.record_success()
    assert b.state is BreakerState.CLOSED  # 50 % is not over 50 %
    b.record_failure()
    assert b.state is BreakerState.OPEN


def test_old_outcomes_leave_the_window() -> None:
    b, clock, _ = breaker(failure_threshold=100, error_rate=0.5, min_requests=4, window=10)
    for _ in range(3):
        b.record_failure()
    clock.now += 11
    for _ in range(3):
        b.record_success()
    b.record_failure()
    assert b.state is BreakerState.CLOSED  # 1 of 4 in the window


def test_abandoned_probe_frees_the_slot() -> None:
    b, clock, _ = breaker(failure_threshold=1, open_seconds=1)
    b.record_failure()
    clock.now += 1
    assert b.acquire()
    b.release()
    assert b.acquire()


@pytest.mark.parametrize(("header", "value"), [(None, 0), (b"high", 10), (b"low", -10),
                                               (b"7", 7), (b"999", 100), (b"junk", 0)])
def test_priority_header(header: bytes | None, value: int) -> None:
    assert parse_priority(header) == value


async def test_queue_serves_most_urgent_first_and_bounds_waiting() -> None:
    queue = AdmissionQueue("d", limit=1, size=2, timeout=5)
    await queue.acquire()
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await queue.acquire(priority)
        order.append(name)

    low = asyncio.ensure_future(wait("low", -10))
    await asyncio.sleep(0)
    high = asyncio.ensure_future(wait("high", 10))
    await asyncio.sleep(0)
    with pytest.raises(CapacityExceededError) as info:
        await queue.acquire()
    assert info.value.headers["retry-after"]
    assert queue.waiting == 2
    queue.release()
    await asyncio.sleep(0)
    queue.release()
    await asyncio.gather(low, high)
    assert order == ["high", "low"]
    assert queue.in_flight == 1 and queue.waiting == 0


async def test_queue_timeout_and_cancellation_leave_no_ghosts() -> None:
    queue = AdmissionQueue("d", limit=1, size=5, timeout=0.05)
    await queue.acquire()
    with pytest.raises(CapacityExceededError):
        await queue.acquire()
    waiter = asyncio.ensure_future(queue.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queue.waiting == 0
    queue.release()
    assert queue.in_flight == 0
    assert await queue.acquire() == 0.0


def test_a_tenant_key_may_lower_its_priority_but_not_raise_it() -> None:
    tenant = Principal(id="key_1", kind="key", priority=5)
    assert request_priority(tenant, None) == 5
    assert request_priority(tenant, b"low") == -10
    assert request_priority(tenant, b"high") == 5  # asked 10: capped at the key's own
    assert request_priority(tenant, b"100") == 5
    master = Principal(id="master", kind="master", is_admin=True)
    assert request_priority(master, b"high") == 10
    assert request_priority(ANONYMOUS, b"7") == 7  # no tenants: the header decides


def test_the_window_keeps_counts_not_one_entry_per_outcome() -> None:
    b, clock, _ = breaker(failure_threshold=10_000, error_rate=0.5, min_requests=10, window=10)
    for i in range(20_000):  # 2,000 outcomes a second for 10 s, one in ten a failure
        clock.now += 0.0005
        b.record_failure() if i % 10 == 0 else b.record_success()
    assert b.state is BreakerState.CLOSED
    assert len(b._slices) <= 101  # bounded by the window's slices, not by the request rate
    assert b._outcomes_in_window == sum(s.outcomes for s in b._slices) >= 19_000
    for _ in range(25_000):  # then mostly failures: the share over the window crosses 50%
        clock.now += 0.0005
        b.record_failure()
        if b.state is BreakerState.OPEN:
            break
    assert b.state is BreakerState.OPEN

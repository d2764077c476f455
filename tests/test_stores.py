"""The shared-state store: one suite, run against MemoryStore and RedisStore alike.

Time moves through the ``now`` parameter (no sleeps) wherever the API takes
one; only the times to live of values and idempotency records need a short
real wait. The Redis runs use a real server and skip, saying so, when none is
reachable.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
import redis
import redis.asyncio

from llmport.stores import (
    Claim,
    CounterCeiling,
    LeaseLimit,
    MemoryStore,
    RedisStore,
    StateStore,
    WindowLimit,
    open_store,
)

REDIS_URL = os.environ.get("LLMPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T0 = 1_000_020.0  # a multiple of 60: the start of a one-second and of a one-minute bucket
SHORT_TTL = 0.05
PAST_SHORT_TTL = 0.12

_redis_reachable: bool | None = None


def redis_or_skip() -> None:
    """Skip (loudly) when no Redis answers at REDIS_URL."""
    global _redis_reachable
    if _redis_reachable is None:
        try:
            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5,
                                          socket_timeout=0.5)
            _redis_reachable = bool(client.ping())
            client.close()
        except redis.RedisError:
            _redis_reachable = False
    if not _redis_reachable:
        pytest.skip(f"REDIS UNREACHABLE at {REDIS_URL}: the RedisStore tests did not run "
                    "(start Redis or set LLMPORT_TEST_REDIS_URL)")


def unique_prefix() -> str:
    return f"test:{uuid4().hex}:"


async def delete_prefixed(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        memory = MemoryStore()
        yield memory
        await memory.aclose()
        return
    redis_or_skip()
    prefix = unique_prefix()
    shared = RedisStore.from_url(REDIS_URL, prefix)
    try:
        yield shared
    finally:
        await shared.aclose()
        await delete_prefixed(prefix)


def rpm(key: str, limit: float, amount: float = 1, window_s: int = 60) -> WindowLimit:
    return WindowLimit(key, limit, amount, window_s)


async def usage(store: StateStore, key: str, now: float, window_s: int = 60) -> float:
    """A window's usage, read with an admission that adds nothing."""
    admission = await store.admit([WindowLimit(key, float("inf"), 0, window_s)], now=now)
    return admission.windows[0].used


# --- windows --------------------------------------------------------------------------------


async def test_a_burst_admits_exactly_the_limit(store: StateStore) -> None:
    results = await asyncio.gather(*(store.admit([rpm("burst", 100)], now=T0 + i / 1000)
                                     for i in range(300)))
    admitted = [r for r in results if r.admitted]
    assert len(admitted) == 100
    assert sorted(r.windows[0].used for r in admitted) == [float(n) for n in range(1, 101)]
    refused = [r for r in results if not r.admitted]
    assert all(r.refused_by == "burst" and r.windows[0].used == 100 for r in refused)
    assert await usage(store, "burst", T0 + 1) == 100


async def test_a_refusal_by_the_second_window_adds_nothing_to_the_first(store: StateStore) -> None:
    first = await store.admit([rpm("per-key", 10), rpm("per-org", 1)], now=T0)
    assert first.admitted and first.refused_by is None and first.retry_after_s == 0
    second = await store.admit([rpm("per-key", 10), rpm("per-org", 1)], now=T0)
    assert not second.admitted and second.refused_by == "per-org"
    assert [w.used for w in second.windows] == [1, 1]  # current usage, not usage + amount
    assert await usage(store, "per-key", T0) == 1
    # Nor does a refusal by a lease or a ceiling change any window.
    await store.set_counter("spend", 5)
    for leases, ceilings in (((LeaseLimit("conc", 0, "l1"),), ()),
                             ((), (CounterCeiling("spend", 5),))):
        refused = await store.admit([rpm("per-key", 10)], leases, ceilings, now=T0)
        assert not refused.admitted
    assert await usage(store, "per-key", T0) == 1


async def test_an_amount_over_the_limit_is_refused_even_when_empty(store: StateStore) -> None:
    refused = await store.admit([rpm("tpm", 1000, amount=1001)], now=T0)
    assert not refused.admitted and refused.refused_by == "tpm"
    assert refused.retry_after_s == 60  # it never fits; a whole window is the honest answer
    exact = await store.admit([rpm("tpm", 1000, amount=1000)], now=T0)
    assert exact.admitted and exact.windows[0].used == 1000


async def test_the_window_slides_bucket_by_bucket(store: StateStore) -> None:
    for offset in (0.0, 0.5, 10.0):
        assert (await store.admit([rpm("slide", 3)], now=T0 + offset)).admitted
    assert not (await store.admit([rpm("slide", 3)], now=T0 + 30)).admitted
    # The bucket starting at T0 holds two; it counts until its start leaves the window.
    assert not (await store.admit([rpm("slide", 3)], now=T0 + 59.999)).admitted
    assert await usage(store, "slide", T0 + 60) == 1
    assert (await store.admit([rpm("slide", 3)], now=T0 + 60)).admitted
    assert (await store.admit([rpm("slide", 3)], now=T0 + 60)).admitted
    assert not (await store.admit([rpm("slide", 3)], now=T0 + 60)).admitted
    assert await usage(store, "slide", T0 + 70) == 2
    assert await usage(store, "slide", T0 + 120) == 0


async def test_windows_of_several_sizes_in_one_admission_keep_their_own_buckets(
        store: StateStore) -> None:
    """Each window size has its own buckets (the Redis script names a bucket once per size):
    the short window's usage stays until its own window has passed, no longer."""
    limits = [rpm("minute", 100), rpm("ten-seconds", 1, window_s=10), rpm("minute-2", 100)]
    assert (await store.admit(limits, now=T0)).admitted
    second = await store.admit(limits, now=T0 + 1)
    assert not second.admitted and second.refused_by == "ten-seconds"
    assert [w.used for w in second.windows] == [1, 1, 1]
    assert (await store.admit(limits, now=T0 + 10.5)).admitted  # the 10 s window moved on
    assert [await usage(store, key, T0 + 10.5, size) for key, size in
            (("minute", 60), ("ten-seconds", 10), ("minute-2", 60))] == [2, 1, 2]


async def test_an_hour_window_has_one_minute_buckets(store: StateStore) -> None:
    hour = WindowLimit("rph", 2, 1, 3600)
    assert (await store.admit([hour], now=T0)).admitted
    assert (await store.admit([hour], now=T0 + 59)).admitted  # the same minute bucket
    refused = await store.admit([hour], now=T0 + 1800)
    assert not refused.admitted and refused.retry_after_s == pytest.approx(1800)
    assert not (await store.admit([hour], now=T0 + 3599)).admitted
    assert (await store.admit([hour], now=T0 + 3600)).admitted


async def test_retry_after_waits_for_enough_usage_to_leave(store: StateStore) -> None:
    for offset in (0, 10, 20):
        await store.admit([rpm("r", 3)], now=T0 + offset)
    one = await store.admit([rpm("r", 3)], now=T0 + 30)
    assert one.retry_after_s == pytest.approx(30)  # the T0 bucket leaves at T0 + 60
    assert one.windows[0].reset_s == pytest.approx(30)
    two = await store.admit([rpm("r", 3, amount=2)], now=T0 + 30)
    assert two.retry_after_s == pytest.approx(40)  # T0 + 10 must leave too
    three = await store.admit([rpm("r", 3, amount=3)], now=T0 + 30.5)
    assert three.retry_after_s == pytest.approx(49.5)
    almost = await store.admit([rpm("r", 3)], now=T0 + 59.9999999)
    assert almost.retry_after_s == 0.001  # never less, however close
    # Refused by two windows: retry when both have room.
    both = await store.admit([rpm("r", 3), rpm("other", 0.5)], now=T0 + 30)
    assert both.refused_by == "r" and both.retry_after_s == 60


async def test_reset_is_when_the_oldest_usage_leaves(store: StateStore) -> None:
    first = await store.admit([rpm("reset", 10)], now=T0 + 0.25)
    assert first.windows[0].reset_s == pytest.approx(59.75)
    later = await store.admit([rpm("reset", 10)], now=T0 + 20.5)
    assert later.windows[0].reset_s == pytest.approx(39.5)
    assert later.windows[0].used == 2 and later.windows[0].limit == 10
    assert (await store.admit([rpm("reset-empty", 10, amount=0)], now=T0)).windows[0].reset_s == 0


async def test_reset_follows_usage_given_back_and_skips_empty_buckets(store: StateStore) -> None:
    await store.admit([rpm("back", 100, amount=4)], now=T0)
    await store.admit([rpm("back", 100, amount=2)], now=T0 + 5)
    await store.settle(windows=[("back", -5, 60)], now=T0 + 5)  # 2 from the newest, 3 of 4
    state = (await store.admit([rpm("back", 100, amount=0)], now=T0 + 5)).windows[0]
    assert state.used == 1 and state.reset_s == pytest.approx(55)  # the oldest keeps 1
    # A bucket holding nothing (an admission of 0) is not the one whose leaving resets.
    await store.admit([rpm("lead", 100, amount=0)], now=T0)
    state = (await store.admit([rpm("lead", 100, amount=2)], now=T0 + 5)).windows[0]
    assert state.used == 2 and state.reset_s == pytest.approx(60)


async def test_settle_corrects_usage_but_never_below_zero(store: StateStore) -> None:
    assert (await store.admit([rpm("tokens", 1000, amount=100)], now=T0)).admitted
    await store.settle(windows=[("tokens", -30, 60)], now=T0)
    assert await usage(store, "tokens", T0) == 70
    # The correction arrives in a later bucket: it comes off the newest usage that has some.
    await store.settle(windows=[("tokens", -20, 60)], now=T0 + 5)
    assert await usage(store, "tokens", T0 + 5) == 50
    await store.settle(windows=[("tokens", 25, 60)], now=T0 + 6)
    assert await usage(store, "tokens", T0 + 6) == 75
    await store.settle(windows=[("tokens", -500, 60)], now=T0 + 7)
    assert await usage(store, "tokens", T0 + 7) == 0
    full = await store.admit([rpm("tokens", 1000, amount=1000)], now=T0 + 7)
    assert full.admitted and full.windows[0].used == 1000
    assert not (await store.admit([rpm("tokens", 1000)], now=T0 + 7)).admitted
    # A negative delta on a window nobody used creates nothing.
    await store.settle(windows=[("untouched", -5, 60)], now=T0)
    assert await usage(store, "untouched", T0) == 0
    # Settled usage leaves with its bucket like admitted usage.
    await store.settle(windows=[("late", 40, 60)], now=T0)
    assert await usage(store, "late", T0 + 59) == 40
    assert await usage(store, "late", T0 + 60) == 0


# --- leases ---------------------------------------------------------------------------------


async def test_leases_cap_concurrency_and_are_released(store: StateStore) -> None:
    def lease(lease_id: str, ttl_s: float = 600) -> LeaseLimit:
        return LeaseLimit("conc", 2, lease_id, ttl_s)

    assert (await store.admit(leases=[lease("a")], now=T0)).leases[0].used == 1
    assert (await store.admit(leases=[lease("b")], now=T0)).leases[0].used == 2
    full = await store.admit(leases=[lease("c")], now=T0)
    assert not full.admitted and full.refused_by == "conc" and full.retry_after_s == 1.0
    assert full.leases[0].used == 2 and full.leases[0].limit == 2
    renewed = await store.admit(leases=[lease("b")], now=T0)  # a holder renewing
    assert renewed.admitted and renewed.leases[0].used == 2
    await store.settle(releases=[("conc", "a"), ("conc", "unknown"), ("nowhere", "x")], now=T0)
    assert (await store.admit(leases=[lease("c")], now=T0)).admitted
    assert not (await store.admit(leases=[lease("d")], now=T0)).admitted


async def test_leases_expire_so_a_crash_cannot_leak_capacity(store: StateStore) -> None:
    assert (await store.admit(leases=[LeaseLimit("crash", 1, "lost", 10)], now=T0)).admitted
    assert not (await store.admit(leases=[LeaseLimit("crash", 1, "next", 10)],
                                  now=T0 + 9.9)).admitted
    after = await store.admit(leases=[LeaseLimit("crash", 1, "next", 10)], now=T0 + 10)
    assert after.admitted and after.leases[0].used == 1


# --- ceilings and counters ------------------------------------------------------------------


async def test_ceilings_refuse_at_or_over_the_counter(store: StateStore) -> None:
    missing = await store.admit(ceilings=[CounterCeiling("budget:k", 1)], now=T0)
    assert missing.admitted and missing.ceilings[0].used == 0
    await store.settle(counters=[("budget:k", 4.5), ("budget:k", 0.5)], now=T0)
    below = await store.admit(ceilings=[CounterCeiling("budget:k", 5.01)], now=T0)
    assert below.admitted and below.ceilings[0].used == 5 and below.ceilings[0].limit == 5.01
    at = await store.admit(ceilings=[CounterCeiling("budget:k", 5)], now=T0)
    assert not at.admitted and at.refused_by == "budget:k" and at.retry_after_s == 1.0
    assert at.ceilings[0].reset_s == 0


async def test_the_first_refusal_is_reported_and_retry_covers_all(store: StateStore) -> None:
    await store.set_counter("spent", 10)
    await store.admit([rpm("w", 1)], leases=[LeaseLimit("l", 1, "x")], now=T0)
    refused = await store.admit([rpm("w", 1)], leases=[LeaseLimit("l", 1, "y")],
                                ceilings=[CounterCeiling("spent", 10)], now=T0 + 1)
    assert not refused.admitted and refused.refused_by == "spent"
    assert refused.retry_after_s == pytest.approx(59)  # the window takes longest
    assert [s.key for s in refused.windows + refused.leases + refused.ceilings] == ["w", "l",
                                                                                   "spent"]
    by_lease = await store.admit([rpm("w2", 5)], leases=[LeaseLimit("l", 1, "y")], now=T0)
    assert by_lease.refused_by == "l" and by_lease.windows[0].used == 0


async def test_counters_add_set_and_seed_once(store: StateStore) -> None:
    assert await store.get_counter("c") is None
    await store.settle(counters=[("c", 0.1), ("c", 0.2)], now=T0)
    assert await store.get_counter("c") == pytest.approx(0.3)
    await store.settle(counters=[("c", -1.3)], now=T0)
    assert await store.get_counter("c") == pytest.approx(-1.0)
    assert await store.set_counter("c", 7.25)
    assert await store.get_counter("c") == 7.25
    assert not await store.set_counter("c", 100, only_if_absent=True)
    assert await store.get_counter("c") == 7.25
    assert await store.set_counter("seed", 3, only_if_absent=True)
    assert await store.get_counter("seed") == 3
    await store.delete("c", "seed", "never-existed")
    assert await store.get_counter("c") is None and await store.get_counter("seed") is None


async def test_counters_expire_and_keep_their_ttl_when_added_to(store: StateStore) -> None:
    assert await store.set_counter("monthly", 1, ttl_s=SHORT_TTL)
    await store.settle(counters=[("monthly", 2)], now=T0)
    assert await store.get_counter("monthly") == 3
    await asyncio.sleep(PAST_SHORT_TTL)
    assert await store.get_counter("monthly") is None
    assert await store.set_counter("monthly", 9, only_if_absent=True)  # expired: seed again


async def test_add_if_absent_rejects_a_replay_until_it_expires(store: StateStore) -> None:
    assert await store.add_if_absent("sig:abc", SHORT_TTL)
    assert not await store.add_if_absent("sig:abc", SHORT_TTL)
    assert await store.add_if_absent("sig:other", 60)
    await asyncio.sleep(PAST_SHORT_TTL)
    assert await store.add_if_absent("sig:abc", 60)
    await store.delete("sig:other")
    assert await store.add_if_absent("sig:other", 60)


async def test_values_round_trip_bytes_with_optional_ttl(store: StateStore) -> None:
    assert await store.get_value("v") is None
    await store.set_value("v", b"\x00binary\xff")
    assert await store.get_value("v") == b"\x00binary\xff"
    await store.set_value("brief", b"x", ttl_s=SHORT_TTL)
    assert await store.get_value("brief") == b"x"
    await asyncio.sleep(PAST_SHORT_TTL)
    assert await store.get_value("brief") is None
    assert await store.get_value("v") == b"\x00binary\xff"
    await store.delete("v")
    assert await store.get_value("v") is None


# --- idempotency records --------------------------------------------------------------------


async def test_claim_state_machine(store: StateStore) -> None:
    assert await store.claim("idem:1", "fp-a", 60, 30) == Claim("new")
    assert await store.claim("idem:1", "fp-a", 60, 30) == Claim("running")
    assert await store.claim("idem:1", "fp-b", 60, 30) == Claim("conflict")
    await store.complete("idem:1", "fp-a", b'{"id":"r1"}', 60)
    assert await store.claim("idem:1", "fp-a", 60, 30) == Claim("done", b'{"id":"r1"}')
    assert await store.claim("idem:1", "fp-b", 60, 30) == Claim("conflict")
    await store.abandon("idem:1", "fp-a")  # a done record is not abandoned
    assert (await store.claim("idem:1", "fp-a", 60, 30)).state == "done"
    await store.complete("idem:1", "fp-b", b"other", 60)  # nor overwritten by another request
    assert await store.claim("idem:1", "fp-a", 60, 30) == Claim("done", b'{"id":"r1"}')


async def test_abandon_lets_a_retry_run(store: StateStore) -> None:
    assert (await store.claim("idem:2", "fp", 60, 30)).state == "new"
    await store.abandon("idem:2", "someone-else")
    assert (await store.claim("idem:2", "fp", 60, 30)).state == "running"
    await store.abandon("idem:2", "fp")
    assert (await store.claim("idem:2", "fp", 60, 30)).state == "new"
    await store.abandon("idem:never", "fp")  # nothing to abandon: no error


async def test_claims_expire(store: StateStore) -> None:
    assert (await store.claim("idem:run", "fp", 60, SHORT_TTL)).state == "new"
    await store.complete("idem:done", "fp", b"", SHORT_TTL)
    assert await store.claim("idem:done", "fp", 60, 30) == Claim("done", b"")
    await asyncio.sleep(PAST_SHORT_TTL)
    # A crashed first attempt no longer blocks; a stored response is forgotten after its ttl.
    assert (await store.claim("idem:run", "other", 60, 30)).state == "new"
    assert (await store.claim("idem:done", "fp", 60, 30)).state == "new"


# --- pub/sub and the rest -------------------------------------------------------------------


async def test_published_messages_reach_subscribers(store: StateStore) -> None:
    got: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def failing(message: bytes) -> None:
        raise RuntimeError("a broken subscriber")

    await store.subscribe("cache", failing)
    await store.subscribe("cache", lambda m: got.put_nowait(("cache", m)))
    await store.subscribe("keys", lambda m: got.put_nowait(("keys", m)))
    await store.publish("cache", b"drop:abc")
    await store.publish("keys", b"revoked:k1")
    await store.publish("nobody-listens", b"lost")
    received = [await asyncio.wait_for(got.get(), 5) for _ in range(2)]
    assert sorted(received) == [("cache", b"drop:abc"), ("keys", b"revoked:k1")]
    assert got.empty()


async def test_ping_and_shared(store: StateStore) -> None:
    assert await store.ping()
    assert store.shared is isinstance(store, RedisStore)


# --- MemoryStore alone ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_memory_store_sweeps_what_expired_unseen() -> None:
    clock = Clock()
    store = MemoryStore(sweep_interval_s=30, clock=clock)
    for i in range(100):
        await store.admit([rpm(f"w{i}", 10)], [LeaseLimit(f"l{i}", 1, "x", 5)], now=T0)
        await store.set_value(f"v{i}", b"x", ttl_s=10)
        await store.claim(f"c{i}", "fp", 60, 10)
    await store.set_value("forever", b"x")
    await store.admit([rpm("recent", 10)], now=T0 + 100)
    assert len(store) == 402
    clock.now = 31  # the next call sweeps: values and claims are past their 10 s
    assert await store.get_value("forever") == b"x"
    # Windows and leases expire on the callers' clock: T0 + 100 is past all but "recent".
    assert len(store) == 2


async def test_memory_store_sweeps_only_when_due() -> None:
    clock = Clock()
    store = MemoryStore(sweep_interval_s=30, clock=clock)
    await store.set_value("v", b"x", ttl_s=1)
    clock.now = 5
    await store.set_value("other", b"y")
    assert len(store) == 2  # expired but unseen, and no sweep due yet
    assert await store.get_value("v") is None  # seen: dropped at once
    assert len(store) == 1


# --- open_store -----------------------------------------------------------------------------


async def test_open_store_picks_the_backend_from_the_url() -> None:
    memory = open_store(None)
    assert isinstance(memory, MemoryStore) and not memory.shared
    for url in ("redis://127.0.0.1:6379/0", "rediss://cache.internal:6380",
                "unix:///run/redis.sock", "REDIS://host"):
        store = open_store(url, prefix="tenant-a:")
        assert isinstance(store, RedisStore) and store.shared and store.prefix == "tenant-a:"
        await store.aclose()
    with pytest.raises(ValueError, match="unsupported state store URL 'http'"):
        open_store("http://127.0.0.1:6379")

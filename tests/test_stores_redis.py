"""RedisStore alone: exactness across independent connections and event loops, pub/sub
between stores, one round trip per call, the key layout, and an unreachable Redis."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio

from llmport.stores import (
    Admission,
    CounterCeiling,
    LeaseLimit,
    MemoryStore,
    RedisStore,
    WindowLimit,
)
from tests.test_stores import REDIS_URL, T0, redis_or_skip, unique_prefix


@pytest.fixture
async def raw() -> AsyncIterator[redis.asyncio.Redis]:
    redis_or_skip()
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def in_threads(prefix: str, attempts: int,
               work: Callable[[RedisStore], Coroutine[Any, Any, Admission]],
               threads: int = 2) -> list[list[Admission]]:
    """``attempts`` concurrent calls of ``work`` in each of ``threads`` threads, each thread
    with its own event loop and its own RedisStore (own pool, own connections), all started
    together."""
    barrier = threading.Barrier(threads)
    results: list[list[Admission]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    async def one(index: int) -> None:
        store = RedisStore.from_url(REDIS_URL, prefix)
        try:
            await store.ping()  # connect before the start line
            barrier.wait()
            results[index] = list(await asyncio.gather(*(work(store) for _ in range(attempts))))
        finally:
            await store.aclose()

    def run(index: int) -> None:
        try:
            asyncio.run(one(index))
        except BaseException as error:
            errors.append(error)
            barrier.abort()

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    return results


async def test_two_replicas_admit_exactly_the_limit(prefix: str) -> None:
    results = in_threads(prefix, 150, lambda store: store.admit([WindowLimit("rpm", 100, 1)],
                                                                now=T0))
    admitted = [r for rs in results for r in rs if r.admitted]
    assert len(admitted) == 100
    assert sorted(r.windows[0].used for r in admitted) == [float(n) for n in range(1, 101)]
    assert all(len(rs) == 150 for rs in results)


async def test_all_or_nothing_holds_under_concurrency(prefix: str) -> None:
    # Each replica's own window (60) and the shared one (100) race: a refusal by either must
    # add nothing to the other, so the shared usage equals exactly what was admitted.
    async def work(store: RedisStore) -> Admission:
        own = f"own:{id(store)}"
        return await store.admit([WindowLimit("shared", 100, 1), WindowLimit(own, 60, 1)],
                                 leases=[LeaseLimit("conc", 1000, uuid4().hex)], now=T0)

    results = in_threads(prefix, 150, work)
    per_thread = [sum(r.admitted for r in rs) for rs in results]
    assert all(n <= 60 for n in per_thread) and sum(per_thread) == 100
    store = RedisStore.from_url(REDIS_URL, prefix)
    try:
        check = await store.admit([WindowLimit("shared", 1000, 0)],
                                  leases=[LeaseLimit("conc", 1000, "probe")], now=T0)
        assert check.windows[0].used == 100
        assert check.leases[0].used == 101  # the 100 admitted leases and the probe
    finally:
        await store.aclose()


async def test_leases_are_exact_across_replicas(prefix: str) -> None:
    results = in_threads(prefix, 50, lambda store: store.admit(
        leases=[LeaseLimit("slots", 7, uuid4().hex)], now=T0))
    assert sum(r.admitted for rs in results for r in rs) == 7


async def test_pubsub_between_two_stores(prefix: str) -> None:
    listener = RedisStore.from_url(REDIS_URL, prefix)
    publisher = RedisStore.from_url(REDIS_URL, prefix)
    elsewhere = RedisStore.from_url(REDIS_URL, unique_prefix())  # another deployment
    got: asyncio.Queue[bytes] = asyncio.Queue()
    strays: list[bytes] = []
    try:
        await listener.subscribe("invalidate", got.put_nowait)
        await elsewhere.subscribe("invalidate", strays.append)
        for i in range(3):
            await publisher.publish("invalidate", b"model:%d" % i)
        received = [await asyncio.wait_for(got.get(), 5) for _ in range(3)]
        assert received == [b"model:0", b"model:1", b"model:2"]  # in order
        # A channel subscribed after the listener started is picked up too.
        await listener.subscribe("keys", got.put_nowait)
        await publisher.publish("keys", b"revoked")
        assert await asyncio.wait_for(got.get(), 5) == b"revoked"
        assert strays == []  # the prefix namespaces channels as well as keys
    finally:
        for store in (listener, publisher, elsewhere):
            await store.aclose()


async def test_the_listener_reconnects_after_its_connection_drops(
        prefix: str, raw: redis.asyncio.Redis) -> None:
    name = f"llmport-test-{uuid4().hex[:12]}"
    listener = RedisStore.from_url(REDIS_URL, prefix, client_name=name)
    publisher = RedisStore.from_url(REDIS_URL, prefix)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        await listener.subscribe("c", got.put_nowait)
        await publisher.publish("c", b"before")
        assert await asyncio.wait_for(got.get(), 5) == b"before"
        clients = await raw.client_list()
        ours = [c for c in clients if c.get("name") == name and int(c.get("sub", 0)) > 0]
        assert len(ours) == 1
        await raw.client_kill_filter(_id=ours[0]["id"])
        # Messages sent while it is away are lost (pub/sub keeps nothing); keep sending until
        # the resubscribed listener hears one.
        for _ in range(100):
            await publisher.publish("c", b"after")
            try:
                assert await asyncio.wait_for(got.get(), 0.1) == b"after"
                break
            except TimeoutError:
                continue
        else:
            pytest.fail("the listener never resubscribed")
    finally:
        await listener.aclose()
        await publisher.aclose()


def record_commands(store: RedisStore, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The names of the commands ``store`` sends from now on, through its redis-py client and
    its lean connection for the batched limit calls (both still send them)."""
    commands: list[Any] = []
    execute: Any = store._client.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        commands.append(args[0])
        return await execute(*args, **options)

    monkeypatch.setattr(store._client, "execute_command", counting)
    assert store._wire is not None  # a redis:// URL: the batches go through RedisWire
    wire_execute: Any = store._wire.execute

    async def counting_wire(protocol: Any, *args: Any) -> Any:
        commands.append(args[0])
        return await wire_execute(protocol, *args)

    monkeypatch.setattr(store._wire, "execute", counting_wire)
    return commands


async def test_each_call_is_one_round_trip(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RedisStore.from_url(REDIS_URL, prefix)
    commands = record_commands(store, monkeypatch)
    try:
        admission = await store.admit(
            [WindowLimit("a", 10, 1), WindowLimit("b", 10, 1), WindowLimit("c", 10, 1)],
            [LeaseLimit("l", 2, "x")], [CounterCeiling("spend", 5)], now=T0)
        assert admission.admitted
        assert commands == ["EVALSHA"]
        commands.clear()
        await store.settle([("a", -1, 60), ("b", 2, 60)], [("spend", 0.5)], [("l", "x")],
                           now=T0)
        assert commands == ["EVALSHA"]
        commands.clear()
        await store.settle(now=T0)  # nothing to do: no round trip at all
        await store.claim("idem", "fp", 60, 30)
        assert commands == ["EVALSHA"]
    finally:
        await store.aclose()


async def test_concurrent_calls_share_round_trips_and_stay_exact(
        prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests at once: the limits hold exactly, each request gets its own answer, and the
    calls travel together (one script call for a burst, not one per request)."""
    store = RedisStore.from_url(REDIS_URL, prefix)
    await store.ping()
    calls = record_commands(store, monkeypatch)
    try:
        burst = await asyncio.gather(*(store.admit([WindowLimit("rpm", 30, 1)], now=T0)
                                       for _ in range(100)))
        assert sum(a.admitted for a in burst) == 30
        assert sorted(a.windows[0].used for a in burst if a.admitted) == list(range(1, 31))
        assert calls.count("EVALSHA") == 1  # (a SCRIPT LOAD may precede it on a new server)
        calls.clear()

        leases = await asyncio.gather(*(store.admit([], [LeaseLimit("cc", 4, f"l{i}")], now=T0)
                                        for i in range(10)))
        holders = [i for i, a in enumerate(leases) if a.admitted]
        assert len(holders) == 4
        # Once the holders release (a burst of settles, batched too), four newcomers fit.
        await asyncio.gather(*(store.settle([], [], [("cc", f"l{i}")], now=T0) for i in holders))
        again = await asyncio.gather(*(store.admit([], [LeaseLimit("cc", 4, f"n{i}")], now=T0)
                                       for i in range(6)))
        assert sum(a.admitted for a in again) == 4
    finally:
        await store.aclose()


def limits_script(seed: int, steps: int = 120) -> list[tuple[str, float, Any]]:
    """A random sequence of admissions and settlements on a few windows, lease pools and
    counters: amounts that binary floats cannot hold exactly, limits low enough to refuse,
    settlements that give back more than was taken (a window emptied and deleted, then used
    again), time that jumps past the window (buckets leave it) and past leases' expiry, and
    sometimes steps back; leases renewed, released twice, released unheld."""
    rng = random.Random(seed)
    sizes = {"a": 60, "b": 60, "h": 3600}
    now = T0
    script: list[tuple[str, float, Any]] = []

    def some(names: tuple[str, ...]) -> list[str]:
        return rng.sample(names, rng.randint(0, len(names)))

    for _ in range(steps):
        now += rng.choice((0.0, 0.3, 1.0, 7.5, 31.0, 59.0, 61.0, -2.0))
        keys = rng.sample(sorted(sizes), rng.randint(1, 3))
        lease_id = f"l{rng.randrange(6)}"
        if rng.random() < 0.6:
            script.append(("admit", now, (
                [WindowLimit(key, rng.choice((3.0, 8.0, 25.0)),
                             rng.choice((0.0, 0.1, 1.0, 2.5, 4.0)), sizes[key]) for key in keys],
                [LeaseLimit(pool, rng.choice((1, 2, 3)), lease_id, rng.choice((20.0, 90.0)))
                 for pool in some(("p", "q"))],
                [CounterCeiling(counter, rng.choice((1.0, 2.5, 100.0)))
                 for counter in some(("c", "d"))])))
        else:
            script.append(("settle", now, (
                [(key, rng.choice((-9.0, -1.0, -0.3, 0.0, 0.7, 3.0)), sizes[key])
                 for key in keys],
                [(counter, rng.choice((0.25, 0.5, 1.0))) for counter in some(("c", "d"))],
                [(pool, lease_id) for pool in some(("p", "q"))])))
    return script


async def run_limits_script(store: Any, script: list[tuple[str, float, Any]],
                            together: bool) -> list[Any]:
    """Each step's outcome (an admission's fields; None for a settlement), then every item's
    state at the end; ``together``: every step sent at once (one batch)."""
    def step(kind: str, now: float, items: Any) -> Coroutine[Any, Any, Any]:
        if kind == "admit":
            return store.admit(*items, now=now)
        return store.settle(*items, now=now)

    if together:
        outcomes = await asyncio.gather(*(step(*entry) for entry in script))
    else:
        outcomes = [await step(*entry) for entry in script]
    final = await store.admit(
        [WindowLimit(key, float("inf"), 0, size)
         for key, size in (("a", 60), ("b", 60), ("h", 3600))],
        [LeaseLimit(pool, 1000, "final", 60.0) for pool in ("p", "q")],
        [CounterCeiling(counter, float("inf")) for counter in ("c", "d")],
        now=script[-1][1] + 1)
    return [None if outcome is None else (
        outcome.admitted, outcome.refused_by, round(outcome.retry_after_s, 9),
        [(w.key, w.used, round(w.reset_s, 9)) for w in outcome.windows],
        [(lease.key, lease.used) for lease in outcome.leases],
        [(ceiling.key, ceiling.used) for ceiling in outcome.ceilings])
        for outcome in [*outcomes, final]]


@pytest.mark.parametrize("seed", range(int(os.environ.get("LLMPORT_TEST_SEEDS", "40"))))
async def test_a_batch_of_limit_operations_equals_them_one_by_one(
        seed: int, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch script keeps each window, lease pool and counter in memory for the whole
    call and writes each window once: many operations on the same items in one call must give
    every operation, and the items, exactly what one call per operation gives — and what
    MemoryStore gives, the backends agreeing to the last bit (rounding, clocks stepping back,
    emptied windows, expired leases)."""
    script = limits_script(seed)
    one_by_one = RedisStore.from_url(REDIS_URL, prefix + "single:")
    batched = RedisStore.from_url(REDIS_URL, prefix + "batched:")
    memory = MemoryStore()
    await batched.ping()
    calls = record_commands(batched, monkeypatch)
    try:
        expected = await run_limits_script(one_by_one, script, together=False)
        got = await run_limits_script(batched, script, together=True)
        assert calls.count("EVALSHA") == 2  # the script's steps in one call, then the final read
        assert got == expected
        assert await run_limits_script(memory, script, together=False) == expected
        assert any(outcome is not None and not outcome[0] for outcome in expected)  # refusals
    finally:
        await one_by_one.aclose()
        await batched.aclose()
        await memory.aclose()


async def test_key_layout_and_expiry(prefix: str, raw: redis.asyncio.Redis) -> None:
    store = RedisStore.from_url(REDIS_URL, prefix)
    try:
        await store.admit([WindowLimit("w", 10, 1)], [LeaseLimit("l", 5, "x", ttl_s=30)],
                          now=T0)
        await store.admit([WindowLimit("w", 10, 1)], now=T0 + 1)
        assert await raw.type(prefix + "w") == b"hash"
        # Buckets by index, and their total, oldest and newest index.
        assert await raw.hgetall(prefix + "w") == {b"1000020": b"1", b"1000021": b"1",
                                                   b"t": b"2", b"o": b"1000020", b"n": b"1000021"}
        assert 60_000 < await raw.pttl(prefix + "w") <= 61_000  # window + one bucket
        assert await raw.type(prefix + "l") == b"zset"
        assert await raw.zscore(prefix + "l", "x") == T0 + 30
        assert 0 < await raw.pttl(prefix + "l") <= 30_000
        # Buckets that left the window are pruned by the next call.
        await store.admit([WindowLimit("w", 10, 1)], now=T0 + 120)
        assert await raw.hgetall(prefix + "w") == {b"1000140": b"1", b"t": b"1",
                                                   b"o": b"1000140", b"n": b"1000140"}
        # Settling a bucket down to zero removes its field.
        await store.settle([("w", -1, 60)], now=T0 + 120)
        assert await raw.exists(prefix + "w") == 0
        await store.claim("idem", "fp", 600, 30)
        assert await raw.hgetall(prefix + "idem") == {b"state": b"running", b"fingerprint": b"fp"}
        assert 0 < await raw.pttl(prefix + "idem") <= 30_000
        await store.complete("idem", "fp", b"body", 600)
        assert (await raw.hgetall(prefix + "idem"))[b"state"] == b"done"
        assert 30_000 < await raw.pttl(prefix + "idem") <= 600_000
        await store.set_counter("spend", 2.5)
        await store.settle(counters=[("spend", 0.25)], now=T0)
        assert await raw.get(prefix + "spend") == b"2.75"
        # A counter written elsewhere as a plain string still counts.
        await raw.set(prefix + "spend", b"9")
        assert await store.get_counter("spend") == 9
    finally:
        await store.aclose()


async def test_a_window_without_its_total_is_recounted(prefix: str,
                                                      raw: redis.asyncio.Redis) -> None:
    """A hash holding only buckets (written before the bookkeeping fields) still counts."""
    store = RedisStore.from_url(REDIS_URL, prefix)
    try:
        await raw.hset(prefix + "w", mapping={"1000019": "3", "1000020": "2", "999950": "4"})
        admitted = await store.admit([WindowLimit("w", 10, 1)], now=T0)
        assert admitted.windows[0].used == 6  # 3 + 2 + this one; bucket 999950 left the window
        assert await raw.hgetall(prefix + "w") == {b"1000019": b"3", b"1000020": b"3",
                                                   b"t": b"6", b"o": b"1000019", b"n": b"1000020"}
        refused = await store.admit([WindowLimit("w", 10, 5)], now=T0)
        assert not refused.admitted
        assert refused.retry_after_s == pytest.approx(1000019 + 60 - T0)  # bucket 1000019 leaves
    finally:
        await store.aclose()


async def test_an_unreachable_redis_is_reported_not_raised() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", "test:", socket_connect_timeout=0.5)
    down = RedisStore(redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0"), "test:",
                      subscribe_timeout_s=0.2)
    try:
        assert await store.ping() is False
        await down.subscribe("c", lambda message: None)  # returns; retried in the background
        with pytest.raises(redis.ConnectionError):
            await store.admit([WindowLimit("w", 1, 1)])
        burst = await asyncio.gather(*(store.admit([WindowLimit("w", 1, 1)]) for _ in range(5)),
                                     return_exceptions=True)  # a failed batch fails each one
        assert all(isinstance(outcome, redis.ConnectionError) for outcome in burst)
    finally:
        await store.aclose()
        await down.aclose()

#!/usr/bin/env python3
"""Redis's own time per request for the limits of the full-featured benchmark.

    bench/redis_cost.py [--requests N] [--concurrency C] [--redis URL]

In multi-replica mode every request runs one admission and one settlement in Redis (Lua
scripts, batched across concurrent requests: ``stores/redis_batch.py``). Redis is single
threaded and shared by every replica, so its time per request caps the whole deployment's
throughput (1 s / that time), whatever the number of gateways. This drives ``RedisStore``
directly with the limits ``setup_full.py`` gives the benchmark's tenant key (requests- and
tokens-per-minute windows, a concurrency lease and a budget on the key, its team and its org:
six windows, three leases, three ceilings a request), C requests at a time, and reports what
Redis's ``INFO commandstats`` says its scripts took, per request and per script call. Uses
keys under a prefix of its own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import redis.asyncio as redis

from llmport.stores import CounterCeiling, LeaseLimit, RedisStore, WindowLimit

LEVELS = ("key:bench", "team:bench", "org:bench")
WINDOW_S = 60


async def script_usec(client: redis.Redis) -> tuple[int, int]:
    """Calls and microseconds of EVAL and EVALSHA so far."""
    stats = await client.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        entry = stats.get(name)
        if entry:
            calls += int(entry["calls"])
            usec += int(entry["usec"])
    return calls, usec


async def run(url: str, requests: int, concurrency: int) -> None:
    prefix = f"redis-cost-{uuid.uuid4().hex[:8]}:"
    store = RedisStore.from_url(url, prefix)
    client = redis.Redis.from_url(url)
    windows = [WindowLimit(f"rl:{level}:{kind}", limit, amount, WINDOW_S)
               for level in LEVELS
               for kind, limit, amount in (("rpm", 1e8, 1), ("tpm", 2e9, 40))]
    ceilings = [CounterCeiling(f"budget:{level}", 1e6) for level in LEVELS]
    numbers = iter(range(10**9))

    async def one() -> None:
        lease = f"lease-{next(numbers)}"
        admission = await store.admit(windows, [LeaseLimit(f"cc:{level}", 100_000, lease, 900)
                                                for level in LEVELS], ceilings)
        assert admission.admitted
        await store.settle([(f"rl:{level}:tpm", -12.0, WINDOW_S) for level in LEVELS],
                           [(c.key, 0.0001) for c in ceilings],
                           [(f"cc:{level}", lease) for level in LEVELS])

    async def many(count: int) -> None:
        left = iter(range(count))

        async def worker() -> None:
            for _ in left:
                await one()

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    try:
        await many(500)  # warm-up: scripts loaded, keys made
        calls0, usec0 = await script_usec(client)
        started = time.perf_counter()
        await many(requests)
        elapsed = time.perf_counter() - started
        calls1, usec1 = await script_usec(client)
    finally:
        await store.aclose()
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            await client.delete(key)
        await client.aclose()
    calls, usec = calls1 - calls0, usec1 - usec0
    print(f"{requests} requests, {concurrency} at a time: Redis scripts {usec / requests:.1f} µs "
          f"a request ({calls} script calls, {2 * requests / calls:.1f} operations each, "
          f"{usec / calls:.0f} µs a call); {requests / elapsed:.0f} requests/s from one client")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    asyncio.run(run(args.redis, args.requests, args.concurrency))


if __name__ == "__main__":
    main()

"""``RedisStore``: the shared-state protocol on Redis, shared by every replica.

Each check-and-update is a Lua function run inside Redis (``redis_scripts.py``,
``redis_items.py``),
so ``admit`` is atomic however many limits it touches, and limits hold exactly
across replicas. The admissions and settlements of concurrent requests travel
together, one script call per batch (``redis_batch.py``), on a lean connection of
their own (``redis_wire.py``; redis-py for everything else). Layout, under the store's
prefix:

* window: a HASH, field = bucket index, value = amount, plus the running total
  ``t``, the oldest bucket with usage ``o`` and the newest ``n`` (see
  ``redis_items``); the script prunes buckets that left the window; PEXPIRE
  window + one bucket, renewed when a bucket opens. (A hash without ``t``, as
  written before these fields existed, is recounted on first use; replicas of
  the older layout must not share Redis with this one: their script cannot read
  the bookkeeping fields.)
* lease pool: a ZSET, member = lease id, score = expiry (epoch seconds);
  expired members are dropped before counting; PEXPIRE the longest lease.
* counter / value / replay marker: a STRING (INCRBYFLOAT for counters).
* idempotency record: a HASH with state, fingerprint, response.

Times inside keys are the callers' ``now``; Redis expiries are relative, so a
test clock far from the wall clock still expires keys at the right pace.

Pub/sub runs one listener task per store on its own connection; it
reconnects with capped exponential backoff and subscribes again to every
channel. Messages published while it is disconnected are lost (pub/sub has no
memory): subscribers use it for invalidation, with a time to live behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub

from llmport.stores import redis_scripts as scripts
from llmport.stores.base import (
    Admission,
    Claim,
    CounterCeiling,
    ItemState,
    LeaseLimit,
    WindowLimit,
    deliver,
    format_number,
)
from llmport.stores.redis_batch import RedisBatcher
from llmport.stores.redis_wire import RedisWire

log = structlog.get_logger("llmport.stores")

_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 5.0


def _ms(seconds: float) -> int:
    # Redis refuses a zero expiry; round up so a time to live is never shortened.
    return max(1, math.ceil(seconds * 1000))


def _num(value: float) -> str:
    """A number as the scripts read it: a float's repr, which is exact."""
    return repr(float(value))


@functools.lru_cache(maxsize=1024)
def _limit_num(value: float) -> str:
    """``_num`` of an admission's limits, amounts and times to live: a few distinct values,
    sent with every request for every level, so each is formatted once and kept."""
    return repr(float(value))


class RedisStore:
    """The ``StateStore`` on Redis. ``client`` must not decode responses (bytes in, bytes out);
    the store closes it on ``aclose`` when ``owns_client``."""

    def __init__(self, client: Redis, prefix: str = "llmport:", *, owns_client: bool = True,
                 ping_timeout_s: float = 1.0, subscribe_timeout_s: float = 5.0,
                 poll_s: float = 1.0) -> None:
        self.prefix = prefix
        self._client = client
        self._owns_client = owns_client
        self._ping_timeout_s = ping_timeout_s
        self._subscribe_timeout_s = subscribe_timeout_s
        self._poll_s = poll_s
        pool = client.connection_pool
        # The batched limit calls on a lean connection of their own where it speaks the URL.
        self._wire = RedisWire(pool.connection_kwargs, scripts.BATCH) \
            if RedisWire.supports(pool.connection_class, pool.connection_kwargs) else None
        self._limits = RedisBatcher(self._wire or client.register_script(scripts.BATCH))
        self._claim = client.register_script(scripts.CLAIM)
        self._complete = client.register_script(scripts.COMPLETE)
        self._abandon = client.register_script(scripts.ABANDON)
        self._callbacks: dict[str, list[Callable[[bytes], None]]] = {}
        self._pubsub: PubSub | None = None
        self._listener: asyncio.Task[None] | None = None
        self._confirmed: set[str] = set()
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    @classmethod
    def from_url(cls, url: str, prefix: str = "llmport:", *, max_connections: int = 64,
                 pool_timeout_s: float = 5.0, **options: Any) -> RedisStore:
        """A store on its own pool. Callers beyond ``max_connections`` wait up to
        ``pool_timeout_s`` for a connection instead of failing at once. ``options`` go to the
        connections (``socket_timeout``, ``client_name``, …)."""
        options.setdefault("health_check_interval", 15)
        options.setdefault("socket_keepalive", True)
        options.setdefault("socket_connect_timeout", 5.0)
        options.setdefault("socket_timeout", 5.0)
        pool = BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=pool_timeout_s,
            decode_responses=False, **options)
        return cls(Redis.from_pool(pool), prefix)

    @property
    def shared(self) -> bool:
        return True

    # --- limits -------------------------------------------------------------------------

    async def admit(self, windows: Sequence[WindowLimit] = (), leases: Sequence[LeaseLimit] = (),
                    ceilings: Sequence[CounterCeiling] = (),
                    now: float | None = None) -> Admission:
        if not (windows or leases or ceilings):
            return Admission(True, (), (), (), None, 0.0)
        if now is None:
            now = time.time()
        p = self.prefix
        keys = [p + c.key for c in ceilings]
        keys += [p + w.key for w in windows]
        keys += [p + lease.key for lease in leases]
        args: list[str | int] = [repr(float(now)), len(ceilings), len(windows), len(leases)]
        args += [_limit_num(c.ceiling) for c in ceilings]
        for w in windows:
            args += (_limit_num(w.limit), _limit_num(w.amount), w.window_s)
        for lease in leases:
            args += (lease.limit, lease.lease_id, _limit_num(lease.ttl_s))
        refused, retry, *values = map(float, (await self._limits.submit("a", keys, args)
                                              ).split(b","))
        nc, nw = len(ceilings), len(windows)
        items: list[CounterCeiling | WindowLimit | LeaseLimit] = [*ceilings, *windows, *leases]
        return Admission(
            not refused,
            tuple(ItemState(w.key, w.limit, values[nc + 2 * i], values[nc + 2 * i + 1])
                  for i, w in enumerate(windows)),
            tuple(ItemState(lease.key, lease.limit, values[nc + 2 * nw + i], 0.0)
                  for i, lease in enumerate(leases)),
            tuple(ItemState(c.key, c.ceiling, values[i], 0.0) for i, c in enumerate(ceilings)),
            None if not refused else items[int(refused) - 1].key,
            retry,
        )

    async def settle(self, windows: Sequence[tuple[str, float, int]] = (),
                     counters: Sequence[tuple[str, float]] = (),
                     releases: Sequence[tuple[str, str]] = (), now: float | None = None) -> None:
        if not (windows or counters or releases):
            return
        if now is None:
            now = time.time()
        p = self.prefix
        keys = [p + key for key, _, _ in windows]
        keys += [p + key for key, _ in counters]
        keys += [p + key for key, _ in releases]
        args: list[str | int] = [repr(float(now)), len(windows), len(counters), len(releases)]
        for _, delta, window_s in windows:
            args += (_num(delta), window_s)
        args += [_num(delta) for _, delta in counters]
        args += [lease_id for _, lease_id in releases]
        await self._limits.submit("s", keys, args)

    # --- counters and values ------------------------------------------------------------

    async def get_counter(self, key: str) -> float | None:
        raw = await self._client.get(self.prefix + key)
        return None if raw is None else float(raw)

    async def set_counter(self, key: str, value: float, ttl_s: float | None = None,
                          only_if_absent: bool = False) -> bool:
        done = await self._client.set(self.prefix + key, format_number(float(value)),
                                      px=None if ttl_s is None else _ms(ttl_s),
                                      nx=only_if_absent)
        return bool(done)

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._client.delete(*(self.prefix + key for key in keys))

    async def add_if_absent(self, key: str, ttl_s: float) -> bool:
        return bool(await self._client.set(self.prefix + key, b"1", px=_ms(ttl_s), nx=True))

    async def get_value(self, key: str) -> bytes | None:
        raw = await self._client.get(self.prefix + key)
        return raw.encode() if isinstance(raw, str) else raw

    async def set_value(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        await self._client.set(self.prefix + key, value,
                               px=None if ttl_s is None else _ms(ttl_s))

    # --- idempotency records ------------------------------------------------------------

    async def claim(self, key: str, fingerprint: str, ttl_s: float,
                    running_ttl_s: float) -> Claim:
        reply = await self._claim(keys=[self.prefix + key],
                                  args=[fingerprint, _ms(running_ttl_s)])
        state = reply[0]
        if state == b"new":
            return Claim("new")
        if state == b"conflict":
            return Claim("conflict")
        if state == b"done":
            return Claim("done", reply[1] if len(reply) > 1 else b"")
        return Claim("running")

    async def complete(self, key: str, fingerprint: str, response: bytes, ttl_s: float) -> None:
        await self._complete(keys=[self.prefix + key], args=[fingerprint, response, _ms(ttl_s)])

    async def abandon(self, key: str, fingerprint: str) -> None:
        await self._abandon(keys=[self.prefix + key], args=[fingerprint])

    # --- pub/sub ------------------------------------------------------------------------

    async def publish(self, channel: str, message: bytes) -> None:
        await self._client.publish(self.prefix + channel, message)

    async def subscribe(self, channel: str, callback: Callable[[bytes], None]) -> None:
        """Returns once the subscription is active (or after ``subscribe_timeout_s`` with a
        warning while Redis is unreachable; the listener subscribes when it reconnects)."""
        name = self.prefix + channel
        first = name not in self._callbacks
        self._callbacks.setdefault(name, []).append(callback)
        if name in self._confirmed:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(name, []).append(waiter)
        try:
            if self._listener is None:
                self._listener = asyncio.create_task(self._listen(), name="llmport-store-pubsub")
            elif first and self._pubsub is not None:
                # While connected the listener only reads, so this write does not race it;
                # a send that fails here is retried by the listener's reconnection.
                with contextlib.suppress(Exception):
                    await self._pubsub.subscribe(name)
            await asyncio.wait_for(asyncio.shield(waiter), self._subscribe_timeout_s)
        except TimeoutError:
            log.warning("store_subscribe_pending", channel=channel)
        finally:
            waiters = self._waiting.get(name)
            if waiters and waiter in waiters:
                waiters.remove(waiter)

    async def _listen(self) -> None:
        delay = _BACKOFF_FIRST_S
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]
                # Set before subscribing, in the same step as the snapshot below: a channel
                # added from now on is sent by subscribe() itself.
                self._pubsub = pubsub
                channels = list(self._callbacks)
                if channels:
                    await pubsub.subscribe(*channels)
                while True:
                    message = await pubsub.get_message(timeout=self._poll_s)
                    if message is not None:
                        delay = _BACKOFF_FIRST_S
                        self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("store_pubsub_disconnected", error=repr(error),
                            retry_in_s=round(delay, 3))
            finally:
                self._pubsub = None
                self._confirmed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, _BACKOFF_MAX_S)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        raw_channel = message["channel"]
        name = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if kind == "message":
            data = message["data"]
            channel = name.removeprefix(self.prefix)
            for callback in tuple(self._callbacks.get(name, ())):
                deliver(callback, channel, data)
        elif kind == "subscribe":
            self._confirmed.add(name)
            for waiter in self._waiting.pop(name, ()):
                if not waiter.done():
                    waiter.set_result(None)

    # --- lifecycle ----------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._client.ping(), self._ping_timeout_s))
        except Exception:
            return False

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        # Waiting subscribers return (a cancellation would read as their own).
        for waiters in self._waiting.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        self._waiting.clear()
        self._callbacks.clear()
        if self._wire is not None:
            await self._wire.aclose()
        if self._owns_client:
            await self._client.aclose()

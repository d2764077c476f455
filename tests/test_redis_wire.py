"""RedisWire, the lean connection for the batched limit calls: against a real Redis, and
against scripted servers that go silent or hang up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from llmport.stores import RedisStore, WindowLimit
from llmport.stores.redis_wire import RedisWire
from tests.test_stores import REDIS_URL, T0

ECHO = "return {KEYS[1], ARGV[1]}"


def options(url: str = REDIS_URL, **extra: Any) -> dict[str, Any]:
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, **extra)
    return dict(pool.connection_kwargs)


async def test_a_script_unknown_to_the_server_is_sent_whole(prefix: str) -> None:
    raw = redis.asyncio.Redis.from_url(REDIS_URL)
    wire = RedisWire(options(), ECHO + " -- " + prefix)  # a script no server has seen
    try:
        assert await raw.script_exists(wire.sha) == [False]
        assert await wire(keys=[prefix + "k"], args=["v"]) == [prefix.encode() + b"k", b"v"]
        assert await raw.script_exists(wire.sha) == [True]  # EVAL cached it: EVALSHA from now
        replies = await asyncio.gather(*(wire(keys=[f"{prefix}{i}"], args=[str(i)])
                                         for i in range(50)))  # pipelined, answered in order
        assert replies == [[f"{prefix}{i}".encode(), str(i).encode()] for i in range(50)]
    finally:
        await wire.aclose()
        await raw.aclose()


async def test_script_errors_are_redis_py_response_errors(prefix: str) -> None:
    wire = RedisWire(options(), "return redis.call('INCR', KEYS[1])")
    raw = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await raw.set(prefix + "text", "not a number")
        with pytest.raises(redis.ResponseError, match="not an integer"):
            await wire(keys=[prefix + "text"], args=[])
        assert await wire(keys=[prefix + "n"], args=[]) == 1  # the connection still works
    finally:
        await wire.aclose()
        await raw.aclose()


async def test_the_url_database_is_selected(prefix: str) -> None:
    url = REDIS_URL.rsplit("/", 1)[0] + "/5"
    store = RedisStore.from_url(url, prefix)
    raw = redis.asyncio.Redis.from_url(url)
    try:
        assert store._wire is not None and store._wire.db == 5
        assert (await store.admit([WindowLimit("w", 10, 1)], now=T0)).admitted
        assert await raw.exists(prefix + "w") == 1  # written in database 5
    finally:
        await raw.delete(prefix + "w")
        await raw.aclose()
        await store.aclose()


@contextlib.asynccontextmanager
async def wire_to(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                   Awaitable[None]], **extra: Any) -> AsyncIterator[RedisWire]:
    """A RedisWire to a scripted server running ``handle`` for each connection."""
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    wire = RedisWire(options(f"redis://127.0.0.1:{port}/0", **extra), ECHO)
    try:
        yield wire
    finally:
        await wire.aclose()
        server.close()


async def test_a_silent_server_times_out_and_the_next_call_reconnects() -> None:
    connections = 0

    async def silent_then_answering(reader: asyncio.StreamReader,
                                    writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        while await reader.read(65536):
            if not first:
                writer.write(b"$2\r\nok\r\n")
        writer.close()

    async with wire_to(silent_then_answering, socket_timeout=0.2) as wire:
        calls = [wire(keys=["k"], args=[str(i)]) for i in range(3)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, redis.TimeoutError) for o in outcomes)  # all in flight fail
        assert await wire(keys=["k"], args=["again"]) == b"ok"
        assert connections == 2


async def test_a_connection_dropped_mid_call_fails_the_call() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.close()

    async with wire_to(hang_up) as wire:
        with pytest.raises(redis.ConnectionError, match="closed the connection"):
            await wire(keys=["k"], args=["v"])


async def test_a_malformed_reply_fails_the_call_and_drops_the_connection() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"?not resp\r\n")
        await reader.read(65536)  # the client hangs up
        writer.close()

    async with wire_to(garbage) as wire:
        with pytest.raises(redis.ConnectionError, match="malformed reply"):
            await wire(keys=["k"], args=["v"])


async def test_unreachable_redis_is_a_connection_error() -> None:
    wire = RedisWire(options("redis://127.0.0.1:1/0", socket_connect_timeout=0.5), ECHO)
    with pytest.raises(redis.ConnectionError, match=r"Error connecting to 127\.0\.0\.1:1"):
        await wire(keys=["k"], args=["v"])


def test_tls_and_unix_socket_urls_stay_on_redis_py() -> None:
    for url in ("rediss://127.0.0.1:6379/0", "unix:///tmp/redis.sock"):
        pool = redis.asyncio.BlockingConnectionPool.from_url(url)
        assert not RedisWire.supports(pool.connection_class, pool.connection_kwargs)
        assert RedisStore(redis.asyncio.Redis.from_pool(pool))._wire is None
    pool = redis.asyncio.BlockingConnectionPool.from_url(REDIS_URL)
    assert RedisWire.supports(pool.connection_class, pool.connection_kwargs)

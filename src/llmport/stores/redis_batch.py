"""Coalesces the admissions and settlements of concurrent requests into one Redis call.

Every request makes two limit calls (admit, settle). Sent one by one, each
costs a round trip and, more, redis-py's per-command work (pool checkout,
packing, parsing): about 3x a request's CPU on the benchmark. Here calls that
arrive while another batch is on the wire wait for it, then all go together as
one ``BATCH`` script call that runs them in arrival order. Under light load a
batch is one call (sent at the next loop turn, no added wait); under heavy load
batches grow by themselves. Each operation is as atomic as before: Redis runs
the whole script without interleaving other clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol

from llmport.running import running_loop


class ScriptCall(Protocol):
    """Runs the batch script: redis-py's ``AsyncScript`` or a ``RedisWire``."""

    def __call__(self, *, keys: list[str], args: list[Any]) -> Awaitable[Any]: ...


MAX_BATCH = 256  # operations per script call (bounds the call's size and Redis' pause)


class RedisBatcher:
    def __init__(self, script: ScriptCall, max_in_flight: int = 1) -> None:
        self._script = script
        self._pending: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]] = []
        self._in_flight = 0
        self._max_in_flight = max_in_flight
        self._scheduled = False
        self._calls: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak ones

    def submit(self, kind: str, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Queue one operation ("a" admit, "s" settle); the future gets its result, the
        operation's fields joined by commas (bytes)."""
        loop = running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((kind, keys, args, future))
        if not self._scheduled and self._in_flight < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._send, loop)
        return future

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self._max_in_flight:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._in_flight += 1
            call = loop.create_task(self._call(batch, loop))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)

    async def _call(self, batch: list[tuple[str, list[str], list[Any], asyncio.Future[Any]]],
                    loop: asyncio.AbstractEventLoop) -> None:
        header: list[Any] = [len(batch)]
        keys: list[str] = []
        args: list[Any] = []
        for kind, op_keys, op_args, _ in batch:
            header += (kind, len(op_keys), len(op_args))
            keys += op_keys
            args += op_args
        packed = ",".join(map(str, header + args))  # one argument: see redis_scripts.BATCH
        try:
            reply = await self._script(keys=keys, args=[packed])
            results = reply.split(b";")
        except BaseException as error:  # every operation of the batch fails with the call
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error if isinstance(error, Exception)
                                         else ConnectionError("the Redis call was cancelled"))
            if not isinstance(error, Exception):
                raise
        else:
            for (*_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            if self._pending:
                self._send(loop)

"""A lean Redis connection for the limits' batched script calls (see ``redis_batch.py``).

The limits make a script call per batch on the request path. Through redis-py's asyncio
client that call cost about 280 µs of the gateway's CPU on the benchmark machine (pool
checkout, a timeout context and stream reads per command, per-argument encoding); written
as one RESP command (packed by hiredis) on a socket of its own, with replies matched to
callers in order (Redis answers one connection's commands in order), about 95 µs. Every
other command of the store goes through redis-py, as do URLs this connection does not
speak (TLS, Unix sockets: ``RedisWire.supports``).

Errors are redis-py's (``ConnectionError``, ``TimeoutError``, ``ResponseError``), so callers
see one error vocabulary whichever way a command went.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections import deque
from typing import Any

import hiredis
from redis import exceptions as errors
from redis.asyncio.connection import Connection

from llmport.running import running_loop


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=errors.ResponseError)
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as error:
                self.abort(errors.ConnectionError(f"Redis sent a malformed reply: {error}"))
                return
            if reply is False:
                return
            if not self.waiters:  # a reply nobody asked for: the stream cannot be trusted
                self.abort(errors.ConnectionError("Redis sent a reply nobody asked for"))
                return
            waiter = self.waiters.popleft()
            if not waiter.done():  # a caller that gave up still had its reply read
                if isinstance(reply, errors.ResponseError):
                    waiter.set_exception(reply)
                else:
                    waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.fail(errors.ConnectionError(
                f"Redis closed the connection: {exc or 'end of stream'}"))

    def fail(self, error: Exception) -> None:
        """Every call in flight fails with ``error``, and so does every later one."""
        self.lost = error
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, *args: Any) -> asyncio.Future[Any]:
        waiter = running_loop().create_future()
        if self.lost is not None or self.transport is None:
            waiter.set_exception(self.lost or errors.ConnectionError("not connected"))
            return waiter
        self.transport.write(hiredis.pack_command(args))
        self.waiters.append(waiter)
        return waiter

    def abort(self, error: Exception) -> None:
        self.fail(error)
        if self.transport is not None:
            self.transport.abort()


class RedisWire:
    """Runs one Lua script (``EVALSHA``, loading it on ``NOSCRIPT``) on a connection of its own.

    Concurrent calls share the connection (pipelined); a call that does not answer within
    ``timeout_s`` fails, with every call in flight on the connection, which is then dropped
    and opened again by the next call.
    """

    def __init__(self, options: dict[str, Any], source: str) -> None:
        self.host = options.get("host", "localhost")
        self.port = int(options.get("port", 6379))
        self.db = int(options.get("db", 0) or 0)
        self.username = options.get("username")
        self.password = options.get("password")
        self.timeout_s = options.get("socket_timeout") or 5.0
        self.connect_timeout_s = options.get("socket_connect_timeout") or self.timeout_s
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    @staticmethod
    def supports(connection_class: type, options: dict[str, Any]) -> bool:
        """Plain TCP only, without settings this connection would ignore."""
        return connection_class is Connection and options.get("protocol") in (None, 2, "2")

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        protocol = await self._connection()
        try:
            return await self.execute(protocol, "EVALSHA", self.sha, len(keys), *keys, *args)
        except errors.ResponseError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
            return await self.execute(protocol, "EVAL", self.source, len(keys), *keys, *args)

    async def execute(self, protocol: _Protocol, *args: Any) -> Any:
        reply = protocol.send(*args)
        timer = running_loop().call_later(
            self.timeout_s, protocol.abort, errors.TimeoutError("Timeout reading from Redis"))
        try:
            return await reply
        finally:
            timer.cancel()

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:  # one connection attempt, shared by concurrent callers
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            protocol = await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None
        return protocol

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
        except (OSError, TimeoutError) as error:
            raise errors.ConnectionError(
                f"Error connecting to {self.host}:{self.port}: {error!r}") from error
        try:
            if self.password:
                auth = (self.username, self.password) if self.username else (self.password,)
                await self.execute(protocol, "AUTH", *auth)
            if self.db:
                await self.execute(protocol, "SELECT", self.db)
        except BaseException:
            protocol.abort(errors.ConnectionError("Redis refused the connection's setup"))
            raise
        self._protocol = protocol
        return protocol

    async def aclose(self) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()  # else it would open a connection nobody closes
            with contextlib.suppress(BaseException):
                await connecting
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()

"""One keep-alive HTTP/1.1 connection and the response read over it (asyncio protocol + httptools).

A ``Connection`` is the asyncio protocol of one socket; each request on it gets
a fresh ``Response``, which is also its httptools parser's callback object.
Bodies are kept as the bytes that arrived (no copies until a caller joins
them). Every wait is bounded: the attempt's deadline is one timer for the
whole exchange; the headers and idle limits arm a timer only while a caller
actually waits. A response whose body ended hands its connection back to the
pool at once, even before its reader has drained it; one that did not end
(error, timeout, the reader gave up) closes its connection, so the upstream
sees the disconnect and stops generating.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, NamedTuple

import httptools

from llmport.errors import LLMPortError, UpstreamConnectionError, UpstreamTimeoutError
from llmport.timers import Cancellable, coarse_timers

if TYPE_CHECKING:
    from llmport.providers.http_client import HTTPClient

STREAM_HIGH_WATER = 256 * 1024  # unread stream bytes at which the socket stops being read
NO_BODY_STATUSES = frozenset({204, 304})


class Limits(NamedTuple):
    """Seconds one attempt may take: in all, until the headers, and between two body reads."""

    total: float
    headers: float | None = None
    idle: float | None = None


class Connection(asyncio.Protocol):
    def __init__(self, client: HTTPClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.loop = asyncio.get_running_loop()
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.connections.add(self)

    def data_received(self, data: bytes) -> None:
        response = self.response
        parser = None if response is None else response.parser
        if response is None or parser is None:
            self.abort()  # bytes nobody asked for: the connection cannot be trusted
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not response.complete:
                response.fail(UpstreamConnectionError(
                    f"{self.client.label} sent a malformed HTTP response: {exc}"))
                return
            response.reusable = False  # bytes after the answer: the connection is not reused
        if response.complete:
            self.response = None
            response.ended()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.connection_lost(self)
        response, self.response = self.response, None
        if response is not None:
            response.lost(exc)

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()


class Response:
    """Status, headers (names lower-cased) and the body as it arrives."""

    def __init__(self, connection: Connection, limits: Limits, deadline: float,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.connection = connection
        self.limits = limits
        # The parser holds this response's bound methods: a reference cycle, broken (parser set
        # to None) as soon as the response ends or fails, so no request leaves garbage for the
        # cycle collector.
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.error: LLMPortError | None = None
        self.body: list[bytes] = []
        self.buffered = 0
        self.high_water = 0  # 0: read everything (read()); streams set STREAM_HIGH_WATER
        self.paused = False
        self.reusable = False
        self.waiter: asyncio.Future[None] | None = None
        self.loop = loop  # the caller's: asking asyncio again costs a getpid() system call
        self.timers = coarse_timers(loop)  # the limits are long: coarse timers (llmport.timers)
        self.deadline: Cancellable = self.timers.call_at(
            deadline, self.time_out, "did not finish within", limits.total)

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:  # a second response in the same bytes: nobody asked for it
            raise ValueError("unsolicited response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()  # type: ignore[union-attr]
        self.headers_done = True
        self.wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.high_water and self.buffered > self.high_water and not self.paused:
            self.paused = True
            self.connection.pause_reading()
        self.wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self.reusable = self.parser.should_keep_alive()  # type: ignore[union-attr]
        self.deadline.cancel()
        self.wake()

    # the connection's notices
    def ended(self) -> None:
        """The body is complete: the connection is free for the next request."""
        self.parser = None
        if self.paused:
            self.paused = False
            self.connection.resume_reading()
        self.connection.client.release(self.connection, self.reusable)

    def lost(self, exc: Exception | None) -> None:
        if self.complete:
            return
        if self.headers_done and self._delimited_by_close():
            self.on_message_complete()  # a body without a length ends when the socket does
            self.reusable = False
            self.parser = None
            return
        label = self.connection.client.label
        reason = f": {exc}" if exc else ""
        self.fail(UpstreamConnectionError(f"{label} broke off the response{reason}")
                  if self.headers_done else
                  UpstreamConnectionError(f"{label} closed the connection before answering"
                                          f"{reason}"))

    def fail(self, error: LLMPortError) -> None:
        if self.error is None and not self.complete:
            self.error = error
            self.parser = None
            self.deadline.cancel()
            self.connection.abort()
        self.wake()

    def time_out(self, what: str, seconds: float) -> None:
        self.fail(UpstreamTimeoutError(f"{self.connection.client.label} {what} {seconds:g}s"))

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # what callers use
    async def wait_headers(self) -> None:
        while not self.headers_done:
            await self._wait(self.limits.headers, "sent no response headers within")

    async def read(self) -> bytes:
        """The whole body."""
        while not self.complete:
            await self._wait(None, "")
        body = self.body
        return body[0] if len(body) == 1 else b"".join(body)

    async def read_chunk(self) -> bytes:
        """What arrived since the last call, waiting for something; b"" at the end of the body."""
        self.high_water = STREAM_HIGH_WATER
        while not self.body:
            if self.complete:
                return b""
            await self._wait(self.limits.idle, "went silent for")
        body = self.body
        self.body = []
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.connection.resume_reading()
        return body[0] if len(body) == 1 else b"".join(body)

    def close(self) -> None:
        """Give up on the rest of the body: its connection is closed (a finished one was already
        handed back to the pool)."""
        if not self.complete:
            self.fail(UpstreamConnectionError(f"{self.connection.client.label}: response closed"))

    async def _wait(self, limit: float | None, what: str) -> None:
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        timer = None if limit is None else self.timers.call_later(limit, self.time_out, what,
                                                                  limit)
        try:
            await waiter
        except BaseException:  # cancelled: the exchange is abandoned half way
            self.close()
            raise
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error

    def _delimited_by_close(self) -> bool:
        headers = self.headers
        return ("content-length" not in headers and "chunked" not in
                headers.get("transfer-encoding", "") and self.status not in NO_BODY_STATUSES)

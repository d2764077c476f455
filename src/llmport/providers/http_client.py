"""A lean HTTP/1.1 client for one upstream origin: keep-alive pool, pre-built request heads.

Why not aiohttp (which the providers used before): one POST and read through
aiohttp cost about 445k of the 773k instructions a bare gateway request
executed. The providers need little of it — POST (and the odd GET) to one
origin, JSON or SSE back — so this client builds each request's head once per
deployment (request line, host, the deployment's fixed headers) and appends
only what changes per request (request id, forwarded headers, length), writes
head and body in one call, and parses the answer with httptools, the parser
the gateway's own server already runs on.

What it does, as aiohttp did: a pool of keep-alive connections (most recently
used first; idle ones older than ``keepalive`` are closed), an optional cap on
open connections (callers queue for a free one), TLS with the system's trust
store, TCP_NODELAY, and the limits of ``Limits``. Failures are raised as the
``llmport.errors`` tree. What it does not: redirects, cookies, proxies,
compression (no ``accept-encoding`` is sent, so upstreams answer uncompressed),
retries (a POST that may have reached the upstream is not resent here; the
router decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from urllib.parse import urlsplit

from llmport.errors import UpstreamConnectionError, UpstreamTimeoutError
from llmport.providers.http_response import Connection, Limits, Response
from llmport.running import running_loop

DEFAULT_KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default)

__all__ = ["HTTPClient", "Limits", "Response", "header_lines"]


def header_lines(headers: dict[str, str]) -> bytes:
    """``name: value\\r\\n`` lines, refusing what would split the head (CR, LF, NUL)."""
    lines = []
    for name, value in headers.items():
        if any(char in name + value for char in "\r\n\0") or not name or ":" in name:
            raise ValueError(f"invalid HTTP header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


class HTTPClient:
    """Requests to one origin (``base_url``'s scheme, host and port; its path prefixes every
    request's path)."""

    def __init__(self, base_url: str, *, label: str, headers: dict[str, str],
                 connect_timeout: float, max_connections: int = 0,
                 keepalive: float = DEFAULT_KEEPALIVE,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.label = label
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.base_path = url.path.rstrip("/")
        self.ssl = (ssl_context or ssl.create_default_context()) if url.scheme == "https" \
            else None
        default_port = self.port == (443 if self.ssl else 80)
        host_header = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host:  # an IPv6 literal is bracketed in the host header
            host_header = f"[{self.host}]" + ("" if default_port else f":{self.port}")
        self.fixed_head = header_lines({"host": host_header, **headers})
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.keepalive = keepalive
        self.connections: set[Connection] = set()  # open (idle or busy)
        self.opening = 0  # connects in progress
        self.idle: list[Connection] = []  # most recently used last
        self.waiting: deque[asyncio.Future[None]] = deque()  # callers queued for a connection
        self.heads: dict[tuple[bytes, str], bytes] = {}
        self.closed = False

    async def request(self, method: bytes, path: str, body: bytes, extra_head: bytes,
                      limits: Limits) -> Response:
        """Send one request and wait for the response's headers; read its body from the
        returned ``Response``. ``extra_head`` is already-encoded header lines (see
        ``header_lines``); ``path`` is appended to the base URL's path."""
        loop = running_loop()
        deadline = loop.time() + limits.total
        connection = self._idle_connection(loop)
        if connection is None:
            try:
                async with asyncio.timeout_at(deadline):
                    connection = await self._acquire(loop)
            except TimeoutError:  # the connect timeout raises its own UpstreamTimeoutError
                raise UpstreamTimeoutError(
                    f"{self.label}: no connection within {limits.total:g}s") from None
        head = self.heads.get((method, path))
        if head is None:
            head = self.heads[(method, path)] = b"%s %s%s HTTP/1.1\r\n%s" % (
                method, self.base_path.encode(), path.encode(), self.fixed_head)
        response = Response(connection, limits, deadline, loop)
        connection.response = response
        connection.transport.write(  # type: ignore[union-attr]
            b"%s%scontent-length: %d\r\n\r\n%s" % (head, extra_head, len(body), body))
        await response.wait_headers()
        return response

    async def aclose(self) -> None:
        self.closed = True
        for connection in list(self.connections):
            connection.abort()
        self.idle.clear()
        for waiter in self.waiting:
            if not waiter.done():
                waiter.set_result(None)

    # the pool
    def _idle_connection(self, loop: asyncio.AbstractEventLoop) -> Connection | None:
        while self.idle:
            connection = self.idle.pop()
            if connection.closed:
                continue
            if loop.time() - connection.idle_since < self.keepalive:
                return connection
            connection.abort()  # idle too long: the server may be about to drop it
        return None

    async def _acquire(self, loop: asyncio.AbstractEventLoop) -> Connection:
        while True:
            if self.closed:
                raise UpstreamConnectionError(f"{self.label}: client closed")
            connection = self._idle_connection(loop)
            if connection is not None:
                return connection
            if not self.max_connections or \
                    len(self.connections) + self.opening < self.max_connections:
                return await self._connect(loop)
            waiter = loop.create_future()
            self.waiting.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.cancelled():
                    self._forget(waiter)
                else:
                    self._wake_one()  # woken, then cancelled: pass the turn on
                raise

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> Connection:
        self.opening += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self), self.host, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
        except TimeoutError:
            raise UpstreamTimeoutError(f"{self.label} could not be reached within "
                                       f"{self.connect_timeout:g}s (connect)") from None
        except OSError as exc:  # refused, unresolvable, TLS failures (ssl.SSLError)
            raise UpstreamConnectionError(f"{self.label} could not be reached: {exc}") from exc
        finally:
            self.opening -= 1
            self._wake_one()
        return connection

    def release(self, connection: Connection, reusable: bool) -> None:
        if reusable and not connection.closed and not self.closed:
            # The connection's loop: in CPython 3.11 each get_running_loop() is a getpid().
            connection.idle_since = connection.loop.time()  # type: ignore[union-attr]
            self.idle.append(connection)
        else:
            connection.abort()
        self._wake_one()

    def connection_lost(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self.waiting.remove(waiter)

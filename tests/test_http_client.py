"""The upstream HTTP/1.1 client on the wire: scripted loopback servers send exact bytes.

Each test's server reads one request at a time (head, then ``content-length``
bytes of body), records it, and answers with what the test scripts, so
keep-alive, framing, timeouts and failures are checked against real sockets.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from llmport import timers
from llmport.errors import UpstreamConnectionError, UpstreamTimeoutError
from llmport.providers.http_client import HTTPClient, Limits, header_lines
from llmport.providers.http_response import STREAM_HIGH_WATER

LIMITS = Limits(total=5.0)
OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"

Script = Callable[["Exchange"], Awaitable[None]]


@dataclass
class Exchange:
    head: bytes
    body: bytes
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


@dataclass
class Server:
    """Answers each request with the next script (the last one repeats)."""

    scripts: list[Script]
    exchanges: list[Exchange] = field(default_factory=list)
    connections: int = 0
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Server:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        return self

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                exchange = Exchange(head, await reader.readexactly(length), writer)
                self.exchanges.append(exchange)
                script = self.scripts[min(len(self.exchanges), len(self.scripts)) - 1]
                await script(exchange)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hung_up.set()
        finally:
            writer.close()

    async def stop(self) -> None:
        self._server.close()


async def ok(exchange: Exchange) -> None:
    await exchange.send(OK)


def client_for(server: Server, **options: object) -> HTTPClient:
    settings: dict[str, object] = {"label": "up", "headers": {"user-agent": "t"},
                                   "connect_timeout": 2.0, **options}
    return HTTPClient(server.url(), **settings)  # type: ignore[arg-type]


async def test_request_head_and_keep_alive() -> None:
    server = await Server([ok]).start()
    client = client_for(server, headers={"user-agent": "t", "authorization": "Bearer k"})
    for n in range(3):
        response = await client.request(b"POST", "/chat/completions", b'{"n":%d}' % n,
                                        b"x-request-id: r%d\r\n" % n, LIMITS)
        assert (response.status, await response.read()) == (200, b'{"ok":true}')
        assert response.headers["content-type"] == "application/json"
    assert server.connections == 1  # one connection served all three
    first = server.exchanges[0]
    assert first.head == (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
                          b"user-agent: t\r\nauthorization: Bearer k\r\nx-request-id: r0\r\n"
                          b"content-length: 7\r\n\r\n" % server.port)
    assert [e.body for e in server.exchanges] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    await client.aclose()
    await server.stop()


async def test_chunked_body_is_read_as_it_arrives() -> None:
    go_on = asyncio.Event()

    async def chunked(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                            b"6\r\ndata: \r\n")
        await go_on.wait()  # the second piece only once the client has read the first
        await exchange.send(b"3\r\nabc\r\n0\r\n\r\n")

    server = await Server([chunked, ok]).start()
    client = client_for(server)
    response = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await response.read_chunk() == b"data: "
    go_on.set()
    assert await response.read_chunk() == b"abc"
    assert await response.read_chunk() == b""
    again = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await again.read() == b'{"ok":true}'
    assert server.connections == 1  # the chunked body ended cleanly: connection reused
    await client.aclose()
    await server.stop()


async def test_body_delimited_by_close_and_connection_close_are_not_reused() -> None:
    async def until_close(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        exchange.writer.close()

    async def says_close(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n"
                            b"\r\nhi")

    server = await Server([until_close, says_close, ok]).start()
    client = client_for(server)
    first = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await first.read() == b"all of it"
    second = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await second.read() == b"hi"
    third = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await third.read() == b'{"ok":true}'
    assert server.connections == 3
    await client.aclose()
    await server.stop()


async def test_connection_dropped_before_or_during_the_answer() -> None:
    async def hang_up(exchange: Exchange) -> None:
        exchange.writer.close()

    async def half_body(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        exchange.writer.close()

    server = await Server([hang_up, half_body, ok]).start()
    client = client_for(server)
    with pytest.raises(UpstreamConnectionError, match="closed the connection before answering"):
        await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    response = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    with pytest.raises(UpstreamConnectionError, match="broke off the response"):
        await response.read()
    last = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await last.read() == b'{"ok":true}'  # the broken connections were not pooled
    await client.aclose()
    await server.stop()


async def test_bytes_after_the_answer_are_ignored_and_the_connection_dropped() -> None:
    async def extra(exchange: Exchange) -> None:
        await exchange.send(OK + b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbad")

    server = await Server([extra, ok]).start()
    client = client_for(server)
    first = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await first.read() == b'{"ok":true}'  # the answer asked for, nothing appended
    second = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await second.read() == b'{"ok":true}'
    assert server.connections == 2  # the first connection was not trusted again
    await client.aclose()
    await server.stop()


async def test_malformed_response_is_an_upstream_error() -> None:
    async def garbage(exchange: Exchange) -> None:
        await exchange.send(b"NOT HTTP AT ALL\r\n\r\n")

    server = await Server([garbage]).start()
    client = client_for(server)
    with pytest.raises(UpstreamConnectionError, match="malformed HTTP response"):
        await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    await client.aclose()
    await server.stop()


async def test_refused_connection() -> None:
    server = await Server([ok]).start()
    await server.stop()
    await asyncio.sleep(0.05)
    client = client_for(server)
    with pytest.raises(UpstreamConnectionError, match="could not be reached"):
        await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    await client.aclose()


async def test_timeouts_headers_idle_and_total() -> None:
    async def silent(exchange: Exchange) -> None:
        await asyncio.sleep(3)

    async def stalls_mid_body(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        await asyncio.sleep(3)

    server = await Server([silent, stalls_mid_body, stalls_mid_body]).start()
    client = client_for(server)
    with pytest.raises(UpstreamTimeoutError, match=r"sent no response headers within 0\.2s"):
        await client.request(b"POST", "/x", b"{}", b"", Limits(total=5, headers=0.2))
    response = await client.request(b"POST", "/x", b"{}", b"", Limits(total=5, idle=0.2))
    assert await response.read_chunk() == b"a"
    with pytest.raises(UpstreamTimeoutError, match=r"went silent for 0\.2s"):
        await response.read_chunk()
    response = await client.request(b"POST", "/x", b"{}", b"", Limits(total=0.3))
    with pytest.raises(UpstreamTimeoutError, match=r"did not finish within 0\.3s"):
        await response.read()
    assert server.connections == 3  # every timed-out connection was closed, none reused
    await client.aclose()
    await server.stop()


async def test_long_limits_run_on_coarse_timers_and_leave_none_behind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits at least ``timers.MIN_DELAY_S`` long use the loop's coarse timers (here made
    short: 50 ms ticks from 0.1 s): they still end a stalled exchange, never early, and a
    finished exchange cancels its timers."""
    monkeypatch.setattr(timers, "TICK_S", 0.05)
    monkeypatch.setattr(timers, "MIN_DELAY_S", 0.1)
    monkeypatch.setattr(timers, "_last", (lambda: None, None))
    loop = asyncio.get_running_loop()
    monkeypatch.delitem(timers._by_loop, loop, raising=False)
    coarse = timers.coarse_timers(loop)

    async def stalls_mid_body(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        await asyncio.sleep(3)

    async def slow_ok(exchange: Exchange) -> None:
        await asyncio.sleep(0.05)
        await exchange.send(OK)

    server = await Server([slow_ok, stalls_mid_body, stalls_mid_body]).start()
    client = client_for(server)
    request = asyncio.ensure_future(
        client.request(b"POST", "/x", b"{}", b"", Limits(total=5, headers=0.5)))
    await asyncio.sleep(0.02)
    assert coarse.pending == 2  # the whole exchange's deadline, and the headers'
    response = await request
    assert await response.read() == b'{"ok":true}'
    assert coarse.pending == 0
    start = loop.time()
    response = await client.request(b"POST", "/x", b"{}", b"", Limits(total=0.3))
    with pytest.raises(UpstreamTimeoutError, match=r"did not finish within 0\.3s"):
        await response.read()
    assert 0.3 <= loop.time() - start <= 0.3 + 0.05 + 0.25
    response = await client.request(b"POST", "/x", b"{}", b"", Limits(total=5, idle=0.2))
    assert await response.read_chunk() == b"a"
    with pytest.raises(UpstreamTimeoutError, match=r"went silent for 0\.2s"):
        await response.read_chunk()
    assert coarse.pending == 0
    await client.aclose()
    await server.stop()


async def test_max_connections_queues_callers() -> None:
    async def slow(exchange: Exchange) -> None:
        await asyncio.sleep(0.1)
        await exchange.send(OK)

    server = await Server([slow]).start()
    client = client_for(server, max_connections=1)

    async def call() -> bytes:
        response = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
        return await response.read()

    assert await asyncio.gather(*(call() for _ in range(4))) == [b'{"ok":true}'] * 4
    assert server.connections == 1
    await client.aclose()
    await server.stop()


async def test_abandoned_response_closes_its_connection() -> None:
    async def endless(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            await exchange.send(b"1\r\nx\r\n")
            await asyncio.sleep(0.01)

    server = await Server([endless, ok]).start()
    client = client_for(server)
    response = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await response.read_chunk()
    response.close()
    await asyncio.wait_for(server.hung_up.wait(), 2)  # the upstream saw the disconnect
    again = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await again.read() == b'{"ok":true}'
    assert server.connections == 2
    await client.aclose()
    await server.stop()


async def test_cancelled_caller_closes_the_connection() -> None:
    async def slow(exchange: Exchange) -> None:
        await asyncio.sleep(1)
        await exchange.send(OK)

    server = await Server([slow]).start()
    client = client_for(server)
    task = asyncio.create_task(client.request(b"POST", "/x", b"{}", b"", LIMITS))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(server.hung_up.wait(), 2)
    assert not client.idle
    await client.aclose()
    await server.stop()


async def test_idle_connection_closed_by_the_server_is_not_reused() -> None:
    async def then_close(exchange: Exchange) -> None:
        await exchange.send(OK)
        await asyncio.sleep(0.05)
        exchange.writer.close()  # the server's keep-alive timeout, after a complete answer

    server = await Server([then_close]).start()
    client = client_for(server)
    for _ in range(2):
        response = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
        assert await response.read() == b'{"ok":true}'
        await asyncio.sleep(0.2)
    assert server.connections == 2
    await client.aclose()
    await server.stop()


async def test_a_slow_stream_reader_stops_the_socket_and_still_gets_every_byte() -> None:
    piece = bytes(range(256)) * 256  # 64 KiB, 2 MiB in all

    async def big(exchange: Exchange) -> None:
        await exchange.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(piece) * 32))
        for _ in range(32):
            await exchange.send(piece)

    server = await Server([big]).start()
    client = client_for(server)
    response = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    received = bytearray()
    most_buffered = 0
    while chunk := await response.read_chunk():
        received += chunk
        await asyncio.sleep(0.02)  # the server could send it all meanwhile
        most_buffered = max(most_buffered, response.buffered)
    assert received == piece * 32
    # Reading stopped at the high-water mark (plus at most one socket read), not at 2 MiB.
    assert most_buffered <= STREAM_HIGH_WATER + 256 * 1024
    await client.aclose()
    await server.stop()


@pytest.mark.parametrize("limits", [LIMITS, Limits(total=600.0, headers=60.0)],
                         ids=["loop-timers", "coarse-timers"])
async def test_exchanges_leave_no_garbage_for_the_cycle_collector(limits: Limits) -> None:
    """Each request's parser refers back to its response, and so does its deadline timer's
    callback; the cycles must be broken when the response ends, or every request leaves work
    for the garbage collector. Long limits (the defaults) run on coarse timers."""
    server = await Server([ok]).start()
    client = client_for(server)
    response = await client.request(b"POST", "/x", b"{}", b"", limits)  # opens the connection
    await response.read()
    del response
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            response = await client.request(b"POST", "/x", b"{}", b"", limits)
            assert await response.read() == b'{"ok":true}'
        del response
        assert gc.collect() == 0
    finally:
        gc.enable()
    await client.aclose()
    await server.stop()


def test_header_lines_refuse_what_would_split_the_head() -> None:
    assert header_lines({"a": "1", "b-c": "x y"}) == b"a: 1\r\nb-c: x y\r\n"
    for bad in ({"a": "1\r\nx-evil: 1"}, {"a\n": "1"}, {"": "1"}, {"a:b": "1"}):
        with pytest.raises(ValueError, match="invalid HTTP header"):
            header_lines(bad)


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_verifies_the_upstream(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    server = await Server([ok]).start(ssl_context=server_side)
    trusting = ssl.create_default_context(cafile=str(cert))
    client = HTTPClient(server.url("https"), label="up", headers={}, connect_timeout=2,
                        ssl_context=trusting)
    response = await client.request(b"POST", "/x", b"{}", b"", LIMITS)
    assert await response.read() == b'{"ok":true}'
    await client.aclose()
    untrusting = HTTPClient(server.url("https"), label="up", headers={}, connect_timeout=2)
    with pytest.raises(UpstreamConnectionError, match=r"could not be reached.*CERTIFICATE"):
        await untrusting.request(b"POST", "/x", b"{}", b"", LIMITS)
    await untrusting.aclose()
    await server.stop()

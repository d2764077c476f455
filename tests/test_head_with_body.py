"""A response's head goes out with its body in one write (``api/server.py``)."""

from __future__ import annotations

import asyncio

from llmport.api.server import HeadWithBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport(asyncio.Transport):
    """The transport interface, recording what reaches the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))
        self.events.append("write")

    def close(self) -> None:
        self.closing = True
        self.events.append("close")

    def abort(self) -> None:
        self.closing = True
        self.events.append("abort")

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def next_pass() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_head_and_body_of_one_pass_are_one_write() -> None:
    real = RecordingTransport()
    transport = HeadWithBody(real, asyncio.get_running_loop())
    transport.write(HEAD)
    assert real.writes == []
    transport.write(b"{}")
    assert real.writes == [HEAD + b"{}"]
    await next_pass()
    assert real.writes == [HEAD + b"{}"]  # the pending release finds nothing left


async def test_a_head_alone_goes_out_at_the_end_of_the_pass() -> None:
    real = RecordingTransport()
    transport = HeadWithBody(real, asyncio.get_running_loop())
    transport.write(HEAD)
    await next_pass()
    assert real.writes == [HEAD]
    transport.write(b"{}")  # a later body: straight through
    assert real.writes == [HEAD, b"{}"]


async def test_a_streams_later_events_are_not_held() -> None:
    real = RecordingTransport()
    transport = HeadWithBody(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    transport.write(b"5\r\nfirst\r\n")
    transport.write(b"6\r\nsecond\r\n")
    assert len(real.writes) == 2
    assert real.writes[0].endswith(b"\r\n\r\n5\r\nfirst\r\n")
    assert real.writes[1] == b"6\r\nsecond\r\n"


async def test_interim_answers_and_closing_keep_their_order() -> None:
    real = RecordingTransport()
    transport = HeadWithBody(real, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]  # not held
    transport.write(HEAD)
    transport.close()  # a held head is written before the connection closes
    assert real.events == ["write", "write", "close"]
    assert real.writes[1] == HEAD


async def test_nothing_is_written_to_a_connection_that_went_away() -> None:
    real = RecordingTransport()
    transport = HeadWithBody(real, asyncio.get_running_loop())
    transport.write(HEAD)
    real.closing = True
    await next_pass()
    assert real.writes == []
    transport.abort()
    assert real.events == ["abort"]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest: delegated


"""Incremental Server-Sent-Events framing for upstream streams.

Upstream reads arrive in arbitrary pieces; ``SSEDecoder.feed`` returns the
complete events they finish, each with its exact bytes so that a pass-through
can relay it untouched. Parsing the JSON inside is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: bytes
    raw: bytes  # the whole event, blank-line terminator included


class SSEDecoder:
    __slots__ = ("_after_cr", "_buffer")

    def __init__(self) -> None:
        self._buffer = b""
        self._after_cr = False  # the last read ended in CR: a LF opening the next is its pair

    def feed(self, piece: bytes) -> list[SSEEvent]:
        if self._after_cr:
            self._after_cr = False
            if piece.startswith(b"\n"):  # a CRLF cut between two reads: one line end
                piece = piece[1:]
        if b"\r" in piece:  # some servers frame with CRLF (or CR); normalise, on the rare path
            self._after_cr = piece.endswith(b"\r")
            piece = piece.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + piece if self._buffer else piece
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            raw = buffer[start:end + 2]
            start = end + 2
            event = _parse(raw)
            if event is not None:
                events.append(event)
        self._buffer = buffer[start:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (what a cut stream left behind)."""
        return self._buffer


def _parse(raw: bytes) -> SSEEvent | None:
    if raw.startswith(b"data: ") and raw.count(b"\n") == 2:  # the common one-line event
        return SSEEvent(None, raw[6:-2], raw)
    name: str | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data and name is None:
        return None  # a comment or keep-alive
    return SSEEvent(name, b"\n".join(data), raw)

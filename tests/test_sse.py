"""SSE framing of upstream streams: the events do not depend on where the reads cut the bytes;
what the gateway changes in a relayed chunk, it changes in its bytes too."""

from __future__ import annotations

import itertools

import orjson
import pytest

from llmport.providers.openai_compatible import _drop_null_usage, _parse_chunk
from llmport.providers.sse import SSEDecoder

# Multi-line data, a named event, a comment, a keep-alive and an event with an empty line of
# data: every shape an upstream sends, in each of the three line endings the spec allows.
EVENTS = (
    "data: {\"a\":1}\n\n"
    ": keep-alive\n\n"
    "event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
    "data: first line\ndata: second line\n\n"
    "data:no space\n\n"
    "data: [DONE]\n\n"
)
EXPECTED = [
    (None, b'{"a":1}'),
    ("message_start", b'{"type":"message_start"}'),
    (None, b"first line\nsecond line"),
    (None, b"no space"),
    (None, b"[DONE]"),
]


def decode(pieces: list[bytes]) -> list[tuple[str | None, bytes]]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    assert decoder.pending == b""
    return [(event.event, event.data) for event in events]


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_events_in_one_read(ending: str) -> None:
    assert decode([EVENTS.replace("\n", ending).encode()]) == EXPECTED


@pytest.mark.parametrize("ending", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_events_cut_anywhere_in_two_reads(ending: str) -> None:
    stream = EVENTS.replace("\n", ending).encode()
    for cut in range(1, len(stream)):
        assert decode([stream[:cut], stream[cut:]]) == EXPECTED, f"cut at byte {cut}"


def test_events_cut_into_single_bytes_with_crlf() -> None:
    stream = EVENTS.replace("\n", "\r\n").encode()
    assert decode([stream[i:i + 1] for i in range(len(stream))]) == EXPECTED


def test_events_cut_at_every_pair_of_points_with_crlf() -> None:
    stream = EVENTS.replace("\n", "\r\n").encode()
    stream = stream[:stream.index(b"}\r\n\r\n", 20) + 5]  # the first three events
    whole = decode([stream])
    assert whole == EXPECTED[:2]
    for first, second in itertools.combinations(range(1, len(stream)), 2):
        pieces = [stream[:first], stream[first:second], stream[second:]]
        assert decode(pieces) == whole, f"cuts at bytes {first} and {second}"


def test_an_unterminated_event_is_pending_not_emitted() -> None:
    decoder = SSEDecoder()
    assert [e.data for e in decoder.feed(b"data: done\n\ndata: cut sho")] == [b"done"]
    assert decoder.pending == b"data: cut sho"


def test_the_raw_bytes_of_an_lf_event_are_relayed_untouched() -> None:
    decoder = SSEDecoder()
    first, second = decoder.feed(b'data: {"a":1}\n\nevent: ping\ndata: {}\n\n')
    assert first.raw == b'data: {"a":1}\n\n'
    assert second.raw == b"event: ping\ndata: {}\n\n"


@pytest.mark.parametrize("raw", [
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n',
    # a nested member of the same name and value, before the top-level one
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi","x":{"a":1,"usage":null}}'
    b'}],"usage":null}\n\n',
    # the top-level member first: no byte patch, the chunk is serialised again
    b'data: {"usage":null,"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
    b'data: {"id":"c", "choices":[], "usage": null}\n\n',
], ids=["last", "nested-before", "first", "spaced"])
def test_a_hidden_null_usage_leaves_the_relayed_bytes_equal_to_the_chunk(raw: bytes) -> None:
    """A gateway that asked the upstream for usage on the client's behalf hides the
    ``"usage": null`` of every chunk; the bytes relayed must say what the chunk says."""
    event = SSEDecoder().feed(raw)[0]
    chunk = _parse_chunk(event.data, event.raw)
    assert chunk is not None
    _drop_null_usage(chunk)
    relayed = chunk.sse()
    assert relayed.startswith(b"data: ") and relayed.endswith(b"\n\n")
    assert orjson.loads(relayed[6:]) == chunk.data
    assert "usage" not in chunk.data
    assert chunk.data["choices"] == orjson.loads(event.data)["choices"]

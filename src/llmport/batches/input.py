"""A batch's input file: JSON lines of ``{custom_id, method, url, body}``, checked whole.

A file with any malformed line fails its batch before any request is made (as OpenAI's
Batch API does): nothing is spent on half a batch. Each request body is checked later,
as the gateway checks any request; a bad body fails that request only.

A file is read as it is stored, part by part, its lines a slice at a time (``lines_of``;
up to 200 MB of JSON parsed at once took five times the file's size in memory):
``InputCheck`` keeps only what the checks need (the custom ids seen, the errors), and
``requests`` parses each request when its turn comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from llmport.db.jobs import MESSAGES  # Anthropic's Message Batches: lines in Messages form
from llmport.types import Endpoint

T = TypeVar("T")
OPENAI_ENDPOINTS = {"/v1/chat/completions": Endpoint.CHAT,
                    "/v1/completions": Endpoint.COMPLETIONS,
                    "/v1/embeddings": Endpoint.EMBEDDINGS}
ENDPOINTS = {**OPENAI_ENDPOINTS, MESSAGES: Endpoint.CHAT}
MAX_ERRORS = 100  # a file's errors reported, at most (a broken file could have thousands)
OFF_LOOP_BYTES = 1 << 20  # work on more bytes goes to a worker thread, off the event loop
SLICE = 1 << 20  # a file's lines are checked and parsed this many bytes at a time


async def off_loop(size: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` on ``size`` bytes: in a worker thread when large (parsing megabytes
    of JSON would stall every request), here at once when small."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.to_thread(work, *args)
    return work(*args)


@dataclass(slots=True, frozen=True)
class Line:
    index: int  # 0-based, in the file's order (blank lines not counted)
    custom_id: str
    body: dict[str, Any]


def batch_error(code: str, message: str, line: int | None = None,
                param: str | None = None) -> dict[str, Any]:
    """One entry of a batch's ``errors.data`` (``line`` is 1-based, as editors count)."""
    return {"code": code, "message": message, "param": param, "line": line}


class LineSplitter:
    """The lines of a file that arrives in pieces, whatever their boundaries: each
    non-blank line's number (1-based, blank lines counted) and bytes. A JSON line ends in
    ``\\n``; a ``\\r`` before it is dropped. (Not ``str.splitlines``: JSON text may hold a
    raw U+2028 inside a string, which that splits.)"""

    def __init__(self) -> None:
        self._held: list[bytes] = []  # the start of a line not yet ended
        self._number = 0

    def feed(self, piece: bytes) -> list[tuple[int, bytes]]:
        if b"\n" not in piece:
            self._held.append(piece)
            return []
        if self._held:
            piece = b"".join([*self._held, piece])
            self._held = []
        lines = piece.split(b"\n")
        rest = lines.pop()
        if rest:
            self._held.append(rest)
        return self._numbered(lines)

    def end(self) -> list[tuple[int, bytes]]:
        rest, self._held = b"".join(self._held), []
        return self._numbered([rest]) if rest else []

    def _numbered(self, lines: list[bytes]) -> list[tuple[int, bytes]]:
        numbered = []
        number = self._number
        for line in lines:
            number += 1
            if line.strip():
                numbered.append((number, line[:-1] if line.endswith(b"\r") else line))
        self._number = number
        return numbered


def _parsed(number: int, line: bytes) -> tuple[Any, dict[str, Any] | None]:
    """A line's value, or the error that says why it has none."""
    try:
        return orjson.loads(line), None
    except orjson.JSONDecodeError:
        pass
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, batch_error("invalid_file_encoding",
                                 f"Line {number} is not UTF-8 text (byte {exc.start + 1}).",
                                 number)
    return None, batch_error("invalid_json_line", f"Line {number} is not valid JSON.", number)


class InputCheck:
    """A batch input file checked as it is read: ``add`` its lines, then ``end``.

    With an ``endpoint`` each line must be a request for it (a batch about to run); without
    one each must be JSON (an upload). Keeps the errors (``MAX_ERRORS`` at most), the
    count of requests, the first one's model and the custom ids seen, nothing else.
    """

    def __init__(self, endpoint: str | None = None, max_lines: int = 0) -> None:
        self.endpoint = endpoint
        self.max_lines = max_lines
        self.count = 0
        self.model: str | None = None
        self.errors: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def end(self) -> list[dict[str, Any]]:
        """The reasons the file cannot run, in order (none: it can); kept in ``errors``."""
        errors = self.errors
        if self.endpoint is not None and self.count > self.max_lines:
            errors = [batch_error("too_many_requests", f"The file has {self.count} requests; "
                                  f"a batch may have at most {self.max_lines}."), *errors]
        if not self.count and not errors:
            errors = [batch_error("empty_file", "The file has no requests.")]
        self.errors = errors[:MAX_ERRORS]
        return self.errors

    def add(self, lines: list[tuple[int, bytes]]) -> None:
        """Check these lines (``LineSplitter``'s: numbered, blank ones left out)."""
        for number, line in lines:
            self.count += 1
            value, error = _parsed(number, line)
            if error is None and self.endpoint is not None:
                error = self._request_error(number, value)
            if error is not None and len(self.errors) < MAX_ERRORS:
                self.errors.append(error)

    def _request_error(self, number: int, value: Any) -> dict[str, Any] | None:
        assert self.endpoint is not None
        problem = _line_problem(value, self.endpoint)
        if problem is None and value["custom_id"] in self._seen:
            problem = ("duplicate_custom_id", "custom_id",
                       f"custom_id {value['custom_id']!r} is used by an earlier line.")
        if problem is not None:
            code, param, message = problem
            return batch_error(code, f"Line {number}: {message}", number, param)
        self._seen.add(value["custom_id"])
        if self.model is None:
            self.model = value["body"]["model"]
        return None


async def check_input(parts: AsyncIterable[bytes], endpoint: str | None = None,
                      max_lines: int = 0, first_error: bool = False) -> InputCheck:
    """``InputCheck`` given a file's lines; with ``first_error`` it stops at the first (an
    upload reports only that)."""
    check = InputCheck(endpoint, max_lines)
    async with aclosing(lines_of(parts)) as lines:
        async for some in lines:
            check.add(some)
            if first_error and check.errors:
                return check
    check.end()
    return check


async def requests(parts: AsyncIterable[bytes]) -> AsyncGenerator[Line, None]:
    """The requests of a file that ``InputCheck`` found sound, each parsed when it is taken:
    at most a slice's lines are held."""
    index = 0
    async for some in lines_of(parts):
        for _, line in some:
            value = orjson.loads(line)
            yield Line(index, value["custom_id"], value["body"])
            index += 1


async def lines_of(parts: AsyncIterable[bytes]) -> AsyncGenerator[list[tuple[int, bytes]], None]:
    """A file's lines (``LineSplitter``'s), a slice of at most ``SLICE`` bytes at a time, the
    event loop let go between slices: a slice's lines are parsed in a millisecond or two,
    where a whole file would hold every other request up."""
    lines = LineSplitter()
    async for part in parts:
        for start in range(0, len(part), SLICE):
            yield lines.feed(part[start:start + SLICE])
            await asyncio.sleep(0)
    yield lines.end()


def _line_problem(value: Any, endpoint: str) -> tuple[str, str | None, str] | None:
    if not isinstance(value, dict):
        return "invalid_request", None, "a request must be a JSON object."
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return "missing_custom_id", "custom_id", "custom_id must be a non-empty string."
    if value.get("method") != "POST":
        return "invalid_method", "method", "method must be \"POST\"."
    if value.get("url") != endpoint:
        return ("mismatched_url", "url",
                f"url must be the batch's endpoint, {endpoint!r} (it is {value.get('url')!r}).")
    body = value.get("body")
    if not isinstance(body, dict):
        return "invalid_body", "body", "body must be a JSON object."
    if not isinstance(body.get("model"), str):
        return "missing_model", "body.model", "body.model must be a string."
    if body.get("stream") is True:
        return "stream_not_supported", "body.stream", "a batch request cannot be streamed."
    return None

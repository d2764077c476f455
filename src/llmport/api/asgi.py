"""Bare-ASGI primitives for the hot proxy routes.

Starlette's Request/Response objects cost about 40 µs per request on this
project's benchmark (see docs/architecture.md), more than every gateway
feature together, so the proxy routes speak ASGI directly through these few
helpers. Admin and documentation routes stay on FastAPI.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, MutableMapping
from itertools import count
from typing import Any

from llmport.errors import LLMPortError, PayloadTooLargeError
from llmport.running import current_task

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]

JSON = b"application/json"
SSE_HEADERS: RawHeaders = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

_PROCESS_TAG = os.urandom(5).hex()
_SEQUENCE = count(1)


def new_request_id() -> str:
    """Unique across processes (random per-process tag) and cheap (a counter)."""
    return f"req_{_PROCESS_TAG}{next(_SEQUENCE):x}"


def request_id_from(headers: RawHeaders) -> str:
    """The client's ``x-request-id`` when it is sane, else a new one."""
    for key, value in headers:
        if key == b"x-request-id":
            return sane_request_id(value)
    return new_request_id()


def sane_request_id(given: bytes | None) -> str:
    """``given`` (a client's ``x-request-id``) when it is sane, else a new id."""
    if given is not None and 0 < len(given) <= 128 and given.isascii():
        text = given.decode()
        if text.isprintable():
            return text
    return new_request_id()


async def read_body(receive: Receive, limit: int) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLargeError(f"Request body exceeds {limit} bytes.")
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        chunk, size = body_piece(message, size, limit)
        parts.append(chunk)
    return b"".join(parts)


def body_piece(message: Message, size: int, limit: int) -> tuple[bytes, int]:
    """A body message's bytes, and the body's size with them: 413 past ``limit`` (counted
    as the body arrives); a client gone mid-body cancels the request."""
    if message["type"] == "http.disconnect":
        raise asyncio.CancelledError("client disconnected while sending the body")
    piece: bytes = message.get("body", b"")
    size += len(piece)
    if size > limit:
        raise PayloadTooLargeError(f"Request body exceeds {limit} bytes.")
    return piece, size


async def send_response(send: Send, status: int, body: bytes, headers: RawHeaders,
                        content_type: bytes = JSON) -> None:
    headers.append((b"content-type", content_type))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_headers(error: LLMPortError) -> RawHeaders:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]


class DisconnectGuard:
    """Cancels the handler's task when the client goes away, so upstream work stops at once.

    One watcher task per request, not per chunk. Uvicorn does not cancel an
    application when its client disconnects; it only answers ``receive()``
    with ``http.disconnect``, which this guard waits for.

    ``close`` does not cancel the watcher: once the response is complete, ASGI
    answers ``receive()`` with ``http.disconnect`` and the watcher ends by itself.
    A cancelled watcher would leave a CancelledError whose traceback ties the
    watcher, this guard and the request's task into a reference cycle, which
    the garbage collector then has to find (about a tenth of a request's CPU).
    """

    __slots__ = ("_closed", "_task", "_watcher", "disconnected")

    def __init__(self, receive: Receive) -> None:
        self.disconnected = False
        self._closed = False
        task = self._task = current_task()
        # The task's own loop: ensure_future would ask asyncio for it again (a getpid()
        # system call each time in CPython 3.11).
        self._watcher = task.get_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self._closed:
                    self.disconnected = True
                    self._task.cancel()
                return

    def close(self) -> None:
        self._closed = True

    def absorb(self) -> bool:
        """After a CancelledError: True (and the cancel undone) if the client caused it."""
        if self.disconnected:
            self._task.uncancel()
            return True
        return False


def request_target(scope: Scope) -> str:
    """The path with its query string, as the client sent them (what a signature covers)."""
    query: bytes = scope.get("query_string") or b""
    return scope["path"] + "?" + query.decode("latin-1") if query else scope["path"]

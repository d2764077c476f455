"""ProxyRoute: the one bare-ASGI handler behind every proxied endpoint.

Authenticate, read and decode the body (through the client's dialect), run
the gateway, encode the result as JSON or SSE, and render any error once, in
the dialect's envelope. A client that disconnects cancels the work at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from time import perf_counter
from typing import Protocol

import structlog

from llmport.api.asgi import (
    SSE_HEADERS,
    DisconnectGuard,
    RawHeaders,
    Receive,
    Scope,
    Send,
    error_headers,
    read_body,
    request_target,
    sane_request_id,
    send_response,
)
from llmport.errors import LLMPortError
from llmport.gateway.context import CallContext
from llmport.gateway.gateway import Gateway
from llmport.types import Chunk, Endpoint, JSONResult

log = structlog.get_logger("llmport.proxy")
CLIENT_CLOSED = 499  # nginx's convention for "the client went away first"


class StreamEncoder(Protocol):
    def encode(self, chunk: Chunk) -> bytes:
        """The bytes to send for ``chunk`` (b"": nothing)."""

    def end(self) -> bytes:
        """The bytes that end a stream that ran to its end (``[DONE]``, ``message_stop``)."""


class Dialect(Protocol):
    """How one wire API (OpenAI, Anthropic) maps onto the gateway's OpenAI-form domain."""

    name: str

    def decode(self, ctx: CallContext, raw: bytes) -> None:
        """Parse and check ``raw``; set ``ctx.body``, ``raw_body``, ``model`` and ``stream``."""

    def encode(self, ctx: CallContext, result: JSONResult) -> bytes: ...

    def stream_encoder(self, ctx: CallContext) -> StreamEncoder:
        """A stream's encoder, called per chunk by the relay loop (a plain call per chunk,
        not another async generator layer)."""

    def stream_error(self, error: LLMPortError) -> bytes: ...

    def error_body(self, error: LLMPortError) -> bytes: ...


async def run_cleanups(ctx: CallContext) -> None:
    """Settle what the policies took at admission; a failure here must not lose the response."""
    for cleanup in ctx.cleanups:
        try:
            await cleanup()
        except Exception:
            log.exception("settling the request failed", request_id=ctx.request_id)
    ctx.cleanups.clear()


class ProxyRoute:
    def __init__(self, gateway: Gateway, endpoint: Endpoint, dialect: Dialect) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.dialect = dialect
        self.max_body = int(gateway.config.server.max_request_mb * 1024 * 1024)
        # A dialect's async step after decoding, with the caller known (the Responses API
        # loads the conversation a request continues); None for most.
        self.prepare = getattr(dialect, "prepare", None)
        # And its async step once the answer is whole, before its last bytes go out (the
        # Responses API stores it then, so the client's next request can continue it).
        self.complete = getattr(dialect, "complete", None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        ctx = CallContext("", self.endpoint, {}, None, "", headers=scope["headers"],
                          client_ip=client[0] if client else None, dialect=self.dialect.name)
        ctx.request_id = sane_request_id(ctx.header(b"x-request-id"))
        status: int = 200
        error: BaseException | None = None
        guard: DisconnectGuard | None = None
        reported = False  # gateway.finish called (before the last bytes, when they go out)
        self.gateway.start_request(ctx)
        try:
            await self.gateway.authenticator.authenticate(ctx)
            ctx.authenticated_at = perf_counter()
            raw = await read_body(receive, self.max_body)
            if ctx.principal.signing_secret is not None:
                await self.gateway.authenticator.check_signature(ctx, "POST",
                                                                 request_target(scope), raw)
            self.dialect.decode(ctx, raw)
            if self.prepare is not None:
                await self.prepare(ctx)
            guard = DisconnectGuard(receive)
            result = await self.gateway.handle(ctx)
            if isinstance(result, JSONResult):
                status = result.status
                body = self.dialect.encode(ctx, result)
                if self.complete is not None:
                    await self.complete(ctx)
                if ctx.state.get("capture_response"):  # body logging is on
                    ctx.state["response_body"] = body
                headers = self._headers(ctx)
                # Reported before the answer leaves: the spend record is in the journal
                # before the client can see the answer, so a crash (kill -9) between the
                # two cannot leave an answered request unrecorded.
                reported = True
                self.gateway.finish(ctx, status, None)
                await send_response(send, status, body, headers)
            else:
                try:
                    tail, error = await self._relay(send, ctx, result.chunks)
                finally:
                    await result.aclose()
                status = error.status_code if error else 200
                reported = True  # as above: the stream's last bytes go out after the report
                self.gateway.finish(ctx, status, error)
                await send({"type": "http.response.body", "body": tail, "more_body": False})
        except LLMPortError as exc:
            if reported:
                raise
            status, error = exc.status_code, exc
            body, headers = self.dialect.error_body(exc), self._headers(ctx) + error_headers(exc)
            reported = True
            self.gateway.finish(ctx, status, error)
            await send_response(send, status, body, headers)
        except asyncio.CancelledError as exc:
            if guard is None or not guard.absorb():
                raise
            status, error = CLIENT_CLOSED, exc
        except Exception as exc:  # the boundary: a bug must still answer in the envelope
            if reported:
                raise
            log.exception("unhandled error", request_id=ctx.request_id)
            status, error = 500, exc
            internal = LLMPortError("The gateway failed to process the request.",
                                    code="internal_error")
            body, headers = self.dialect.error_body(internal), self._headers(ctx)
            reported = True
            self.gateway.finish(ctx, status, error)
            await send_response(send, 500, body, headers)
        finally:
            if guard is not None:
                guard.close()
            if ctx.cleanups:
                await run_cleanups(ctx)
            if not reported:
                self.gateway.finish(ctx, status, error)

    def _headers(self, ctx: CallContext) -> RawHeaders:
        headers = [(b"x-request-id", ctx.request_id.encode()),
                   (b"x-llmport-overhead-ms", b"%.3f" % (ctx.mark_response_start() * 1000))]
        if ctx.response_headers:
            headers += ctx.response_headers
        return headers

    async def _relay(self, send: Send, ctx: CallContext, chunks: AsyncIterator[Chunk]
                     ) -> tuple[bytes, LLMPortError | None]:
        """Relay a primed stream, all but its last bytes (returned, with the error that
        ended it, if any). An error after the first byte ends it with an error event."""
        await send({"type": "http.response.start", "status": 200,
                    "headers": self._headers(ctx) + SSE_HEADERS})
        encoder = self.dialect.stream_encoder(ctx)
        failure: LLMPortError | None = None
        tail = b""
        try:
            async for chunk in chunks:
                data = encoder.encode(chunk)
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
            tail = encoder.end()
            if self.complete is not None:
                await self.complete(ctx)
        except LLMPortError as exc:
            failure = exc
        except Exception as exc:
            log.exception("stream failed", request_id=ctx.request_id)
            failure = LLMPortError(f"The stream failed: {type(exc).__name__}",
                                   code="internal_error")
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        if failure is not None:
            # An encoder that keeps state (the Responses API's sequence numbers) ends it.
            stream_error = getattr(encoder, "error", None) or self.dialect.stream_error
            tail = stream_error(failure)
        # The last event and the end of the body go out in one write: a client that stops
        # reading at the last event (most do) finds the response complete and can reuse the
        # connection; sent apart, it sees an unfinished response and drops the connection.
        return tail, failure

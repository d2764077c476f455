"""A fake OpenAI-compatible upstream: a real HTTP server on loopback, scriptable per request.

It speaks the OpenAI wire format (JSON bodies, SSE streams with ``[DONE]``,
error envelopes) and records every request it receives, including whether
the client hung up on a stream. Behaviours are queued with ``enqueue``; when
the queue is empty, ``default`` answers.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

WORDS = ["Hello", "from", "the", "fake", "upstream", ",", "answering", "every", "request",
         "quickly", "and", "exactly", "."]


@dataclass
class Recorded:
    path: str
    headers: CIMultiDict[str]  # case-insensitive, as HTTP headers are
    body: dict[str, Any]
    at: float
    disconnected: bool = False  # the client hung up before the response was complete
    finished: bool = False


@dataclass
class Answer:
    """A correct answer, streamed or not, honouring n, tools, logprobs and include_usage."""

    tokens: int = 8
    ttft: float = 0.0  # seconds before the first content token
    delay: float = 0.0  # seconds between streamed tokens
    cut_after: int | None = None  # stream: drop the connection after this many tokens
    stall_after: int | None = None  # stream: go silent for good after this many tokens
    malformed_at: int | None = None  # stream: send one broken event before this token
    done: bool = True  # stream: send [DONE] at the end
    hold_open: float = 0.0  # stream: seconds to keep the connection open after the last event
    model: str = "fake-model-2024"
    words: tuple[str, ...] | None = None  # the answer's tokens (text pieces), else WORDS'

    async def __call__(self, up: FakeOpenAI, request: web.Request, rec: Recorded) -> Any:
        body = rec.body
        if request.path.endswith("/embeddings"):
            return _embeddings(body)
        chat = request.path.endswith("/chat/completions")
        words = list(self.words) if self.words is not None else [
            (" " if i else "") + WORDS[i % len(WORDS)] for i in range(self.tokens)]
        messages = body.get("messages") or []
        if chat and messages and messages[-1].get("role") == "assistant":
            if up.prefill == "reject":
                return await Fail(400, "This model does not support assistant message prefill.",
                                  "invalid_request_error", "unsupported_prefill")(up, request, rec)
            if up.prefill == "continue":
                words = _continuation(words, str(messages[-1].get("content") or ""))
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        finish = "stop"
        if isinstance(limit, int) and limit < len(words):
            words, finish = words[:limit], "length"
        tool = _forced_tool(body) if chat else None
        if tool is not None:
            finish = "tool_calls"
        n = int(body.get("n") or 1)
        usage = {"prompt_tokens": 11, "completion_tokens": len(words) * n,
                 "total_tokens": 11 + len(words) * n,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0,
                                               "rejected_prediction_tokens": 0}}
        ident = f"chatcmpl-fake{next(up.ids)}" if chat else f"cmpl-fake{next(up.ids)}"
        base = {"id": ident, "created": int(time.time()), "model": self.model}
        if not body.get("stream"):
            await asyncio.sleep(self.ttft)
            if chat:
                message: dict[str, Any] = {"role": "assistant", "content": "".join(words),
                                           "refusal": None, "annotations": []}
                if tool is not None:
                    message["content"] = None
                    message["tool_calls"] = [tool]
                logprobs = ({"content": [_logprob(w) for w in words], "refusal": None}
                            if body.get("logprobs") else None)
                choices = [{"index": i, "message": message, "logprobs": logprobs,
                            "finish_reason": finish} for i in range(n)]
                data = {**base, "object": "chat.completion", "choices": choices, "usage": usage,
                        "service_tier": "default", "system_fingerprint": "fp_fake"}
            else:
                choices = [{"index": i, "text": "".join(words), "logprobs": None,
                            "finish_reason": finish} for i in range(n)]
                data = {**base, "object": "text_completion", "choices": choices, "usage": usage}
            return web.Response(body=orjson.dumps(data), content_type="application/json")
        return await self._stream(request, rec, base, chat, words, finish, tool, n, usage)

    async def _stream(self, request: web.Request, rec: Recorded, base: dict[str, Any], chat: bool,
                      words: list[str], finish: str, tool: dict[str, Any] | None, n: int,
                      usage: dict[str, Any]) -> web.StreamResponse:
        body = rec.body
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        obj = "chat.completion.chunk" if chat else "text_completion"

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            data = {**base, "object": obj, "choices": choices, **extra}
            if chat:
                data["system_fingerprint"] = "fp_fake"
            if include_usage and "usage" not in extra:
                data["usage"] = None
            return b"data: " + orjson.dumps(data) + b"\n\n"

        def choice(i: int, delta: dict[str, Any], fin: str | None = None,
                   lp: Any = None) -> dict[str, Any]:
            if chat:
                return {"index": i, "delta": delta, "logprobs": lp, "finish_reason": fin}
            return {"index": i, "text": delta.get("content", ""), "logprobs": None,
                    "finish_reason": fin}

        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            if chat:
                await response.write(event([choice(i, {"role": "assistant", "content": "",
                                                        "refusal": None}) for i in range(n)]))
            await asyncio.sleep(self.ttft)
            if tool is not None:
                head = {"index": 0, "id": tool["id"], "type": "function",
                        "function": {"name": tool["function"]["name"], "arguments": ""}}
                await response.write(event([choice(i, {"tool_calls": [head]})
                                            for i in range(n)]))
                args = tool["function"]["arguments"]
                for part in (args[:5], args[5:]):
                    delta = {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}
                    await response.write(event([choice(i, delta) for i in range(n)]))
            for index, word in enumerate(words):
                if index and self.delay:
                    await asyncio.sleep(self.delay)
                if index == self.cut_after:
                    request.transport.close()  # type: ignore[union-attr]
                    return response
                if index == self.stall_after:
                    await asyncio.sleep(3600)
                if index == self.malformed_at:
                    await response.write(b'data: {"id": "broken", "choices": [\n\n')
                lp = ({"content": [_logprob(word)], "refusal": None}
                      if chat and body.get("logprobs") else None)
                await response.write(event([choice(i, {"content": word}, lp=lp)
                                            for i in range(n)]))
            await response.write(event([choice(i, {}, finish) for i in range(n)]))
            if include_usage:
                await response.write(event([], usage=usage))
            if self.done:
                await response.write(b"data: [DONE]\n\n")
            await asyncio.sleep(self.hold_open)
            await response.write_eof()
            rec.finished = True
        except ConnectionResetError:
            rec.disconnected = True
            raise
        return response


@dataclass
class Fail:
    """An error response in the OpenAI envelope."""

    status: int = 500
    message: str = "The server had an error while processing your request."
    type: str = "server_error"
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    async def __call__(self, up: FakeOpenAI, request: web.Request, rec: Recorded) -> Any:
        body = {"error": {"message": self.message, "type": self.type, "param": None,
                          "code": self.code}}
        return web.Response(status=self.status, body=orjson.dumps(body),
                            content_type="application/json", headers=self.headers)


@dataclass
class Hang:
    """Accept the request and never answer (until the client gives up)."""

    seconds: float = 3600.0

    async def __call__(self, up: FakeOpenAI, request: web.Request, rec: Recorded) -> Any:
        await asyncio.sleep(self.seconds)
        return await Answer()(up, request, rec)


@dataclass
class Reset:
    """Drop the TCP connection with a reset before sending any header."""

    async def __call__(self, up: FakeOpenAI, request: web.Request, rec: Recorded) -> Any:
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            linger = struct.pack("ii", 1, 0)  # on, 0 s: close() sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        transport.abort()
        await asyncio.sleep(0.05)
        return web.Response()


@dataclass
class FailUntil:
    """Fail with ``status`` until ``deadline`` (time.monotonic()), then answer normally."""

    deadline: float
    status: int = 503
    answer: Answer = field(default_factory=Answer)

    async def __call__(self, up: FakeOpenAI, request: web.Request, rec: Recorded) -> Any:
        if time.monotonic() < self.deadline:
            return await Fail(self.status, "down for maintenance")(up, request, rec)
        return await self.answer(up, request, rec)


def _continuation(words: list[str], prefix: str) -> list[str]:
    """The words after an assistant prefill that matches the start of the answer."""
    text = ""
    for index, word in enumerate(words):
        if text == prefix:
            return words[index:]
        text += word
    return [] if text == prefix else words


def _logprob(token: str) -> dict[str, Any]:
    return {"token": token, "logprob": -0.25, "bytes": list(token.encode()), "top_logprobs": []}


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or choice in (None, "none", "auto"):
        return None
    function = choice.get("function") if isinstance(choice, dict) else tools[0].get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return {"id": "call_fake1", "type": "function",
            "function": {"name": name, "arguments": '{"city": "Paris"}'}}


def _embeddings(body: dict[str, Any]) -> web.Response:
    import base64

    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    dims = int(body.get("dimensions") or 8)
    vector = [round(0.1 * (i + 1), 3) for i in range(dims)]
    encoded: Any = vector
    if body.get("encoding_format") == "base64":
        encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
    data = [{"object": "embedding", "index": i, "embedding": encoded} for i in range(len(inputs))]
    usage = {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}
    return web.Response(body=orjson.dumps({"object": "list", "data": data,
                                           "model": "fake-embedding", "usage": usage}),
                        content_type="application/json")


class FakeOpenAI:
    """Runs in its own thread and event loop; tests talk to it over loopback."""

    def __init__(self) -> None:
        self.history: list[Recorded] = []
        self.queue: deque[Any] = deque()
        self.default: Any = Answer()
        self.prefill = "ignore"  # a trailing assistant message: "ignore" | "continue" | "reject"
        self.ids = itertools.count(1)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *behaviours: Any) -> None:
        self.queue.extend(behaviours)

    def reset(self) -> None:
        self.history.clear()
        self.queue.clear()
        self.default = Answer()
        self.prefill = "ignore"

    async def _handle(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {"_raw": raw.decode(errors="replace")}
        rec = Recorded(request.path, CIMultiDict(request.headers), body, time.monotonic())
        self.history.append(rec)
        behaviour = self.queue.popleft() if self.queue else self.default
        try:
            return await behaviour(self, request, rec)
        except (ConnectionResetError, asyncio.CancelledError):
            rec.disconnected = True  # aiohttp cancels the handler when its client hangs up
            raise

    def start(self) -> FakeOpenAI:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, handler_cancellation=True)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> bool:
        """Poll ``predicate()`` until true or ``timeout``; for cross-thread observations."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return bool(predicate())

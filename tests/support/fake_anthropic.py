"""A fake Messages API upstream: a real HTTP server on loopback, scriptable per request.

It speaks the wire format of ``POST /v1/messages`` (JSON, or SSE with
``event:`` lines, ``ping`` and all) and ``/v1/messages/count_tokens``, with
the API's error envelope. It is strict like the real API: a request without
``x-api-key`` or ``anthropic-version``, or whose body does not have exactly
the shape of the official SDK's types (``messages_shapes``), or that breaks
the API's rules (a ``tool_result`` without its ``tool_use``, an empty text
block, a prefill ending in whitespace), gets a 400/401 error, so a bad
translation fails loudly. The server machinery (thread, queue of behaviours,
history, ``wait_for``) is ``FakeOpenAI``'s.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support.fake_openai import FakeOpenAI, Recorded
from tests.support.messages_shapes import request_problems

TEXT = "Hello from the fake Anthropic upstream, answering every request quickly."


def sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_response(status: int, kind: str, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message},
            "request_id": "req_fake0123456789"}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)


@dataclass
class Reply:
    """A correct answer, honouring max_tokens, stop_sequences, forced tools and tool results."""

    text: str | None = None  # None: TEXT, or what a tool result / prefill calls for
    tool_input: dict[str, Any] = field(default_factory=lambda: {"city": "Paris"})
    thinking: str | None = None  # a thinking block before the answer
    usage: dict[str, Any] = field(default_factory=lambda: {
        "input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    delay: float = 0.0  # seconds between streamed deltas
    cut_after: int | None = None  # stream: drop the connection after this many text deltas
    error_after: int | None = None  # stream: an overloaded error event after this many
    stop: bool = True  # stream: send message_stop
    model: str = "claude-fake-4-5-20250929"

    async def __call__(self, up: FakeAnthropic, request: web.Request, rec: Recorded) -> Any:
        body = rec.body
        blocks, reason, sequence = self._answer(body)
        output = sum(len(_words(b.get("text") or b.get("thinking") or "")) for b in blocks) \
            + sum(len(orjson.dumps(b["input"])) // 4 for b in blocks if b["type"] == "tool_use")
        message = {"id": f"msg_fake{next(up.ids):020d}", "type": "message",
                   "role": "assistant", "model": self.model, "content": blocks,
                   "stop_reason": reason, "stop_sequence": sequence,
                   "usage": {**self.usage, "output_tokens": output}}
        if not body.get("stream"):
            return web.Response(body=orjson.dumps(message), content_type="application/json")
        return await self._stream(request, rec, message)

    def _answer(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str | None]:
        last = body["messages"][-1]
        content = last["content"] if isinstance(last["content"], list) else []
        results = [b for b in content if b["type"] == "tool_result"]
        text = self.text
        if text is None and results:
            text = f"The tool said: {_result_text(results[0])}"
        elif text is None and last["role"] == "assistant":
            text = " (continued by the fake)"
        text = TEXT if text is None else text
        blocks: list[dict[str, Any]] = []
        if self.thinking:
            blocks.append({"type": "thinking", "thinking": self.thinking, "signature": "c2ln"})
        tool = None if results else _forced_tool(body)
        reason, sequence = "end_turn", None
        words = _words(text)
        if len(words) > body["max_tokens"]:
            words, reason = words[:body["max_tokens"]], "max_tokens"
        text = "".join(words)
        for stop in body.get("stop_sequences") or ():
            if stop in text:
                text, reason, sequence = text[:text.index(stop)], "stop_sequence", stop
        if tool is not None:
            text, reason, sequence = "Let me check.", "tool_use", None
        if text:
            blocks.append({"type": "text", "text": text})
        if tool is not None:
            blocks.append({"type": "tool_use", "id": "toolu_01FakeA09q90qw90lq917835",
                           "name": tool, "input": self.tool_input})
        return blocks, reason, sequence

    async def _stream(self, request: web.Request, rec: Recorded,
                      message: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
                 "usage": {**message["usage"], "output_tokens": 1}}
        await response.write(sse("message_start", {"type": "message_start", "message": start}))
        sent = 0
        try:
            for index, block in enumerate(message["content"]):
                empty = {"tool_use": {**block, "input": {}}, "text": {"type": "text", "text": ""},
                         "thinking": {**block, "thinking": "", "signature": ""}}[block["type"]]
                await response.write(sse("content_block_start", {
                    "type": "content_block_start", "index": index, "content_block": empty}))
                if index == 0:
                    await response.write(sse("ping", {"type": "ping"}))
                for delta in _deltas(block):
                    if sent and self.delay:
                        await asyncio.sleep(self.delay)
                    if sent == self.cut_after:
                        request.transport.close()  # type: ignore[union-attr]
                        return response
                    if sent == self.error_after:
                        await response.write(sse("error", {"type": "error", "error": {
                            "type": "overloaded_error", "message": "Overloaded"}}))
                        await response.write_eof()
                        return response
                    await response.write(sse("content_block_delta", {
                        "type": "content_block_delta", "index": index, "delta": delta}))
                    sent += 1
                await response.write(sse("content_block_stop",
                                         {"type": "content_block_stop", "index": index}))
            await response.write(sse("message_delta", {
                "type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                   "stop_sequence": message["stop_sequence"]},
                "usage": message["usage"]}))
            if self.stop:
                await response.write(sse("message_stop", {"type": "message_stop"}))
            await response.write_eof()
            rec.finished = True
        except ConnectionResetError:
            rec.disconnected = True
            raise
        return response


@dataclass
class Fail:
    """An error response in the Messages envelope."""

    status: int = 529
    type: str = "overloaded_error"
    message: str = "Overloaded"
    headers: dict[str, str] = field(default_factory=dict)

    async def __call__(self, up: FakeAnthropic, request: web.Request, rec: Recorded) -> Any:
        return error_response(self.status, self.type, self.message, self.headers)


@dataclass
class Count:
    """A count_tokens answer: ``tokens``, or one per four characters of the JSON body."""

    tokens: int | None = None

    async def __call__(self, up: FakeAnthropic, request: web.Request, rec: Recorded) -> Any:
        tokens = self.tokens if self.tokens is not None else len(orjson.dumps(rec.body)) // 4
        return web.Response(body=orjson.dumps({"input_tokens": tokens}),
                            content_type="application/json")


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


def _deltas(block: dict[str, Any]) -> list[dict[str, Any]]:
    if block["type"] == "text":
        return [{"type": "text_delta", "text": w} for w in _words(block["text"])]
    if block["type"] == "thinking":
        return [{"type": "thinking_delta", "thinking": w} for w in _words(block["thinking"])] \
            + [{"type": "signature_delta", "signature": block["signature"]}]
    arguments = orjson.dumps(block["input"]).decode()
    return [{"type": "input_json_delta", "partial_json": ""}] + [
        {"type": "input_json_delta", "partial_json": arguments[i:i + 7]}
        for i in range(0, len(arguments), 7)]


def _result_text(result: dict[str, Any]) -> str:
    content = result.get("content", "")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content)
    return str(content)


def _forced_tool(body: dict[str, Any]) -> str | None:
    tools = [t["name"] for t in body.get("tools") or ()]
    choice = body.get("tool_choice") or {"type": "auto"}
    if not tools or choice["type"] == "none":
        return None
    if choice["type"] == "tool":
        return str(choice["name"])
    if choice["type"] == "any":
        return tools[0]
    return None


def semantic_problems(body: dict[str, Any]) -> list[str]:
    """The Messages API's rules beyond shapes, as its 400 messages name them."""
    problems = []
    if not body["messages"]:
        return ["messages: at least one message is required"]
    previous_tools: set[str] = set()
    for index, message in enumerate(body["messages"]):
        content = message["content"]
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for block in blocks:
            if block["type"] == "text" and not block["text"]:
                problems.append(f"messages.{index}: text content blocks must be non-empty")
            if block["type"] == "tool_result" and block["tool_use_id"] not in previous_tools:
                problems.append(f"messages.{index}: unexpected `tool_use_id` found in "
                                "`tool_result` blocks: each `tool_result` block must have a "
                                "corresponding `tool_use` block in the previous message.")
        previous_tools = {b["id"] for b in blocks if b["type"] == "tool_use"}
    last = body["messages"][-1]
    if last["role"] == "assistant" and isinstance(last["content"], list) and last["content"] \
            and last["content"][-1]["type"] == "text" \
            and last["content"][-1]["text"] != last["content"][-1]["text"].rstrip():
        problems.append("final assistant content cannot end with trailing whitespace")
    if not 0 <= body.get("temperature", 0) <= 1:
        problems.append("temperature: Input should be less than or equal to 1")
    return problems


class FakeAnthropic(FakeOpenAI):
    """Runs in its own thread and event loop; tests talk to it over loopback."""

    def __init__(self) -> None:
        super().__init__()
        self.default = Reply()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        super().reset()
        self.default = Reply()

    async def _handle(self, request: web.Request) -> Any:
        raw = await request.read()
        count = request.path == "/v1/messages/count_tokens"
        if request.path != "/v1/messages" and not count:
            return error_response(404, "not_found_error", f"Not found: {request.path}")
        if not request.headers.get("x-api-key"):
            return error_response(401, "authentication_error", "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return error_response(400, "invalid_request_error",
                                  "anthropic-version: header is required")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return error_response(400, "invalid_request_error", "Invalid JSON in request body")
        problems = request_problems(body, count=count)
        if not problems and not count:
            problems = semantic_problems(body)
        if problems:
            return error_response(400, "invalid_request_error", "; ".join(problems))
        if count and not self.queue:
            self.queue.append(Count())
        return await super()._handle(request)  # records it, then runs the next behaviour

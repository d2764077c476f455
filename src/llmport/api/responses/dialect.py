"""The Responses dialect: ``/v1/responses`` requests in, chat inside, response objects out.

Like the Messages dialect, a request is checked and translated once, then served by any
model through the whole pipeline; the result (or each stream chunk) is translated back.
What chat has no notion of is kept here: the response id, and the conversation. With
``store`` (the default) the finished response is saved before its last bytes are sent
(``complete``) — its object, its input items and the conversation's chat messages — and
``previous_response_id`` continues that conversation (``prepare``, after authentication:
only the caller's own responses).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from llmport.api.jobs.caller import owner_of
from llmport.api.openai.validation import parse_json_object
from llmport.api.responses.validation import validate_response
from llmport.db.responses import ResponseTables
from llmport.errors import InvalidRequestError, LLMPortError, NotFoundError, RateLimitError
from llmport.gateway.context import CallContext
from llmport.translation.chat_to_responses import finished, new_id, response_frame
from llmport.translation.chat_to_responses_stream import Event, ResponseEvents
from llmport.translation.responses_to_chat import chat_messages, chat_request
from llmport.types import Chunk, JSONResult

log = structlog.get_logger("llmport.responses")
TURN = "responses.turn"  # ctx.state key


@dataclass(slots=True)
class Turn:
    """One request's part of a conversation, and its answer once there is one."""

    body: dict[str, Any]
    new_messages: list[dict[str, Any]]
    frame: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    response: dict[str, Any] | None = None
    message: dict[str, Any] | None = None


def sse_event(event: Event) -> bytes:
    name, data = event
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ResponsesDialect:
    name = "responses"

    def __init__(self, tables: ResponseTables | None) -> None:
        self.tables = tables  # None: no database, so nothing is stored

    def decode(self, ctx: CallContext, raw: bytes) -> None:
        body = parse_json_object(raw)
        ctx.model, ctx.stream = validate_response(body)
        if self.tables is None and body.get("previous_response_id"):
            raise InvalidRequestError("previous_response_id needs the gateway's database.",
                                      param="previous_response_id")
        new_messages = chat_messages(body["input"])
        turn = Turn(body, new_messages, response_frame(body, new_id("resp"), int(time.time())))
        ctx.state[TURN] = turn
        ctx.body, ctx.raw_body = chat_request(body, [], new_messages), None

    async def prepare(self, ctx: CallContext) -> None:
        """Continue the previous response's conversation (the caller's own only)."""
        turn: Turn = ctx.state[TURN]
        previous_id = turn.body.get("previous_response_id")
        if self.tables is None or not previous_id:
            return
        previous = await self.tables.get(owner_of(ctx.principal), previous_id)
        if previous is None:
            raise NotFoundError(f"No response with id {previous_id!r}.",
                                param="previous_response_id", code="response_not_found")
        turn.history = previous.history
        ctx.body = chat_request(turn.body, turn.history, turn.new_messages)

    async def complete(self, ctx: CallContext) -> None:
        """Store the finished response (unless ``store`` is false) before the client has it
        all, so its next request can continue it. A failure to store is logged; the answer
        still goes out."""
        turn: Turn = ctx.state[TURN]
        if self.tables is None or not turn.body.get("store", True) or turn.response is None \
                or turn.message is None:
            return
        try:
            await self.tables.save(owner_of(ctx.principal), turn.response,
                                   input_items(turn.body["input"]),
                                   [*turn.history, *turn.new_messages, turn.message])
        except Exception:
            log.exception("storing the response failed", response_id=turn.response["id"])

    def encode(self, ctx: CallContext, result: JSONResult) -> bytes:
        turn: Turn = ctx.state[TURN]
        turn.response, turn.message = finished(turn.frame, result.data)
        return orjson.dumps(turn.response)

    def stream_encoder(self, ctx: CallContext) -> ResponsesStream:
        return ResponsesStream(ctx.state[TURN])

    def stream_error(self, error: LLMPortError) -> bytes:
        """An error event for a stream that broke before its encoder existed."""
        return sse_event(("error", {"type": "error", "code": error.code,
                                    "message": error.message, "param": error.param,
                                    "sequence_number": 0}))

    def error_body(self, error: LLMPortError) -> bytes:
        return error.openai_json()


class ResponsesStream:
    """A stream's chat chunks as Responses events."""

    __slots__ = ("events", "turn")

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.events = ResponseEvents(turn.frame)

    def encode(self, chunk: Chunk) -> bytes:
        return b"".join(sse_event(e) for e in self.events.feed(chunk.data))

    def end(self) -> bytes:
        events = self.events.close()
        self.turn.response, self.turn.message = self.events.response, self.events.message
        return b"".join(sse_event(e) for e in events)

    def error(self, error: LLMPortError) -> bytes:
        code = "rate_limit_exceeded" if isinstance(error, RateLimitError) else "server_error"
        return b"".join(sse_event(e) for e in self.events.fail(code, error.message))


def input_items(value: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's input as the items ``GET /v1/responses/{id}/input_items`` lists."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user",
                  "content": [{"type": "input_text", "text": value}]}]
    items = []
    for item in value:
        item = {"type": "message", **item}
        if item["type"] == "message" and isinstance(item.get("content"), str):
            kind = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": kind, "text": item["content"]}]
        items.append({"id": item.get("id") or new_id("msg" if item["type"] == "message"
                                                     else "item"), **item})
    return items

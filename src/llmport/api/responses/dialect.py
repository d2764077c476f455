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
from llmport.api.responses.file_search import (
    RESULTS,
    Citations,
    FileSearch,
    SearchTool,
    call_item,
    excerpts_message,
    found_files,
    query_of,
)
from llmport.api.responses.validation import validate_response
from llmport.db.conversations import ConversationTables
from llmport.db.responses import ResponseTables
from llmport.errors import InvalidRequestError, LLMPortError, NotFoundError, RateLimitError
from llmport.gateway.context import CallContext
from llmport.translation.chat_to_responses import finished, new_id, response_frame
from llmport.translation.chat_to_responses_stream import Event, ResponseEvents
from llmport.translation.items import stored_items
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
    search: SearchTool | None = None  # its file_search tool
    search_item: dict[str, Any] | None = None  # the file_search_call item, once searched
    found: list[tuple[str, str]] = field(default_factory=list)  # its files: (id, filename)


def sse_event(event: Event) -> bytes:
    name, data = event
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class ResponsesDialect:
    name = "responses"

    def __init__(self, tables: ResponseTables | None,
                 conversations: ConversationTables | None,
                 file_search: FileSearch | None = None) -> None:
        self.tables = tables  # None: no database, so nothing is stored
        self.conversations = conversations
        self.file_search = file_search  # None: no vector stores (no database, or rag off)

    def decode(self, ctx: CallContext, raw: bytes) -> None:
        body = parse_json_object(raw)
        ctx.model, ctx.stream, search = validate_response(body)
        for key in ("previous_response_id", "conversation"):
            if self.tables is None and body.get(key):
                raise InvalidRequestError(f"{key} needs the gateway's database.", param=key)
        if isinstance(body.get("conversation"), str):
            body["conversation"] = {"id": body["conversation"]}
        new_messages = chat_messages(body["input"])
        turn = Turn(body, new_messages, response_frame(body, new_id("resp"), int(time.time())))
        turn.search = search
        if search is not None and self.file_search is None:
            raise InvalidRequestError("file_search needs the gateway's vector stores (a "
                                      "database, and rag enabled).", param="tools",
                                      code="unsupported_tool")
        ctx.state[TURN] = turn
        ctx.body, ctx.raw_body = chat_request(body, [], new_messages), None

    async def prepare(self, ctx: CallContext) -> None:
        """Continue the previous response's conversation, or a conversation's (the caller's
        own only); run the turn's file search, if it has one."""
        turn: Turn = ctx.state[TURN]
        continued = await self._load_history(ctx, turn)
        context = None
        if turn.search is not None and self.file_search is not None:
            query = query_of(turn.new_messages)
            if query is not None:  # no user text this turn (tool outputs): nothing to search
                hits = await self.file_search.run(ctx.principal, turn.search, query)
                turn.search_item = call_item(query, hits,
                                             RESULTS in (turn.body.get("include") or ()))
                turn.found = found_files(hits)
                context = excerpts_message(hits)
        if continued or context is not None:
            ctx.body = chat_request(turn.body, turn.history, turn.new_messages, context)

    async def _load_history(self, ctx: CallContext, turn: Turn) -> bool:
        """The earlier turns into ``turn.history``; False when the request continues none."""
        previous_id = turn.body.get("previous_response_id")
        conversation = turn.body.get("conversation")
        owner = owner_of(ctx.principal)
        if previous_id and self.tables is not None:
            previous = await self.tables.get(owner, previous_id)
            if previous is None:
                raise NotFoundError(f"No response with id {previous_id!r}.",
                                    param="previous_response_id", code="response_not_found")
            turn.history = await self.tables.history(previous)
        elif conversation and self.conversations is not None:
            if await self.conversations.get(owner, conversation["id"]) is None:
                raise NotFoundError(f"No conversation with id {conversation['id']!r}.",
                                    param="conversation", code="conversation_not_found")
            items = await self.conversations.items(conversation["id"])
            turn.history = chat_messages(items) if items else []
        else:
            return False
        return True

    async def complete(self, ctx: CallContext) -> None:
        """Store the finished response (unless ``store`` is false) before the client has it
        all, so its next request can continue it. A failure to store is logged; the answer
        still goes out."""
        turn: Turn = ctx.state[TURN]
        if self.tables is None or turn.response is None or turn.message is None:
            return
        owner = owner_of(ctx.principal)
        items = stored_items(turn.body["input"])
        try:
            if turn.body.get("store", True):
                await self.tables.save(owner, turn.response, items,
                                       [*turn.new_messages, turn.message],
                                       turn.body.get("previous_response_id") or None,
                                       earlier=turn.history)
            conversation = turn.body.get("conversation")
            if conversation and self.conversations is not None:
                await self.conversations.append(owner, conversation["id"],
                                                [*items, *turn.response["output"]])
        except Exception:
            log.exception("storing the response failed", response_id=turn.response["id"])

    def encode(self, ctx: CallContext, result: JSONResult) -> bytes:
        turn: Turn = ctx.state[TURN]
        turn.response, turn.message = finished(turn.frame, result.data)
        if turn.search_item is not None:
            citations = Citations(turn.found)
            for item in turn.response["output"]:
                if item["type"] == "message":
                    for part in item["content"]:
                        part["annotations"] = citations.of(part["text"])
            turn.response["output"].insert(0, turn.search_item)
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
        self.events = ResponseEvents(
            turn.frame, [turn.search_item] if turn.search_item else None,
            Citations(turn.found) if turn.search_item else None)

    def encode(self, chunk: Chunk) -> bytes:
        return b"".join(sse_event(e) for e in self.events.feed(chunk.data))

    def end(self) -> bytes:
        events = self.events.close()
        self.turn.response, self.turn.message = self.events.response, self.events.message
        return b"".join(sse_event(e) for e in events)

    def error(self, error: LLMPortError) -> bytes:
        code = "rate_limit_exceeded" if isinstance(error, RateLimitError) else "server_error"
        return b"".join(sse_event(e) for e in self.events.fail(code, error.message))

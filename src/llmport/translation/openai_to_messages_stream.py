"""OpenAI chat chunks → Messages stream events (inbound): the state machine of one stream."""

from __future__ import annotations

from typing import Any

from llmport.translation.openai_to_messages import (
    message_id,
    message_usage,
    reasoning_text,
    stop_reason,
)

Event = tuple[str, dict[str, Any]]


class MessageEvents:
    """OpenAI chat chunks → Messages stream events, one chunk at a time.

    ``feed`` returns the ``(event name, data)`` pairs a chunk makes: the
    ``message_start`` (then a ``ping``, as the Messages API sends), a
    ``content_block_start`` whenever output switches between thinking (shown
    only if the client asked for it), text and a tool call, their
    ``thinking_delta``, ``text_delta`` and ``input_json_delta`` deltas, and
    the stop of the block they close. ``close`` ends the message: ``message_delta`` with the
    stop reason and the usage the provider reported, then ``message_stop``.
    Only the first choice is translated (Messages has no ``n``).
    """

    __slots__ = ("_block", "_blocks", "_finish", "_matched", "_model", "_refused", "_started",
                 "_stop_sequences", "_thinking", "_tools", "_usage")

    def __init__(self, model: str, stop_sequences: list[str] | None,
                 thinking: bool = False) -> None:
        self._model = model
        self._thinking = thinking
        self._stop_sequences = stop_sequences
        self._started = False
        self._block: tuple[str, int] | None = None  # ("text" | "thinking", -1), ("tool", i)
        self._blocks = 0  # content blocks started so far
        self._tools: dict[int, int] = {}  # OpenAI tool call index → content block index
        self._finish: str | None = None
        self._matched: str | None = None
        self._refused = False  # the model refused (OpenAI's `refusal` instead of content)
        self._usage: Any = None

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._start(events, chunk)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            thought = reasoning_text(delta) if self._thinking else None
            if thought:
                self._delta(events, "thinking", thought)
            text = delta.get("content")
            if not text and delta.get("refusal"):
                text = delta["refusal"]
                self._refused = True
            if text:
                self._delta(events, "text", text)
            for position, call in enumerate(delta.get("tool_calls") or ()):
                self._tool(events, call, position)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._matched = choice.get("stop_reason")
        return events

    def close(self) -> list[Event]:
        events: list[Event] = []
        if not self._started:
            self._start(events, {})
        self._stop_block(events)
        reason, sequence = stop_reason({"finish_reason": self._finish,
                                        "stop_reason": self._matched},
                                       self._stop_sequences, bool(self._tools))
        if self._refused and reason == "end_turn":  # as message_response says it
            reason = "refusal"
        events.append(("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": reason, "stop_sequence": sequence},
            "usage": message_usage(self._usage)}))
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start(self, events: list[Event], chunk: dict[str, Any]) -> None:
        # Input tokens are known only at the end of an OpenAI stream: message_start says 0
        # and message_delta carries the totals, which the Messages clients take as final.
        self._started = True
        events.append(("message_start", {"type": "message_start", "message": {
            "id": message_id(chunk.get("id")), "type": "message", "role": "assistant",
            "model": chunk.get("model") or self._model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": {"input_tokens": 0, "cache_creation_input_tokens": 0,
                                             "cache_read_input_tokens": 0, "output_tokens": 0}}}))

    def _open(self, events: list[Event], block: dict[str, Any]) -> int:
        self._stop_block(events)
        index = self._blocks
        self._blocks += 1
        events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                               "content_block": block}))
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        return index

    def _stop_block(self, events: list[Event]) -> None:
        if self._block is not None:
            events.append(("content_block_stop", {"type": "content_block_stop",
                                                  "index": self._blocks - 1}))
            self._block = None

    def _delta(self, events: list[Event], kind: str, text: str) -> None:
        if self._block != (kind, -1):
            self._open(events, {"type": "text", "text": ""} if kind == "text"
                       else {"type": "thinking", "thinking": "", "signature": ""})
            self._block = (kind, -1)
        events.append(("content_block_delta", {"type": "content_block_delta",
                                               "index": self._blocks - 1,
                                               "delta": {"type": f"{kind}_delta", kind: text}}))

    def _tool(self, events: list[Event], call: dict[str, Any],
              position: int) -> None:
        call_index = call.get("index", position)
        function = call.get("function") or {}
        if call_index not in self._tools:
            self._tools[call_index] = self._open(events, {
                "type": "tool_use", "id": call.get("id") or f"toolu_{call_index}",
                "name": function.get("name") or "", "input": {}})
            self._block = ("tool", call_index)
        arguments = function.get("arguments")
        if arguments:
            events.append(("content_block_delta", {
                "type": "content_block_delta", "index": self._tools[call_index],
                "delta": {"type": "input_json_delta", "partial_json": arguments}}))

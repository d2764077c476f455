"""Messages stream events → OpenAI chat chunks (outbound): the state machine of one stream."""

from __future__ import annotations

from typing import Any

from llmport.translation.messages_to_openai import FINISH_REASONS, usage


class ChunkStream:
    """Messages stream events → OpenAI chat chunks, one event at a time.

    ``feed`` takes each event's parsed data and returns the chunks it makes
    (often none); after ``message_stop`` the last one carries the usage, as
    every provider's stream does, and ``done`` is true. ``stopped`` is true
    once ``message_delta`` gave the stop reason: the answer is complete.
    """

    __slots__ = ("_base", "_tools", "_usage", "done", "stopped")

    def __init__(self, created: int) -> None:
        self._base: dict[str, Any] = {"id": "msg", "object": "chat.completion.chunk",
                                      "created": created, "model": ""}
        self._tools: dict[int, int] = {}  # content block index → OpenAI tool call index
        self._usage: dict[str, Any] = {}
        self.done = False
        self.stopped = False

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            message = event.get("message") or {}
            self._base["id"] = message.get("id") or "msg"
            self._base["model"] = message.get("model") or ""
            self._usage.update(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "message_delta":
            # Counts on message_delta are cumulative totals: they replace the start's values.
            self._usage.update({k: v for k, v in (event.get("usage") or {}).items()
                                if v is not None})
            delta = event.get("delta") or {}
            self.stopped = True
            chunk = self._chunk({}, FINISH_REASONS.get(delta.get("stop_reason") or "", "stop"))
            if delta.get("stop_sequence"):
                chunk["choices"][0]["stop_reason"] = delta["stop_sequence"]
            return [chunk]
        if kind == "message_stop":
            self.done = True
            return [{**self._base, "choices": [], "usage": usage(self._usage).to_openai()}]
        return []  # ping, content_block_stop

    def _block_start(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block") or {}
        if block.get("type") == "tool_use":
            index = self._tools[event.get("index", 0)] = len(self._tools)
            return [self._chunk({"tool_calls": [{"index": index, "id": block.get("id"),
                                                 "type": "function", "function": {
                                                     "name": block.get("name"),
                                                     "arguments": ""}}]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _delta(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if kind == "input_json_delta":
            partial = delta.get("partial_json", "")
            # Only a client tool's input: a server tool's (web search…) is no tool call of
            # the client's, as chat_completion leaves it out too.
            index = self._tools.get(event.get("index", 0))
            if not partial or index is None:
                return []
            return [self._chunk({"tool_calls": [{"index": index,
                                                 "function": {"arguments": partial}}]})]
        if kind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        return []  # signature_delta, citations_delta

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                           "finish_reason": finish}]}

"""OpenAI chat and text-completion responses, built from what a local model produced.

The same shapes as the demo model's and OpenAI's own: streams open with a
role chunk per choice (chat), carry one chunk per choice and step, close each
choice with a finish chunk, and end with a usage chunk whose ``choices`` is
empty (the OpenAI dialect shows it only to clients that asked for it).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from llmport.providers.hf_request import Counted, Piece
from llmport.types import Chunk, Endpoint, Usage


class CompletionWire:
    """One response's identity (id, created, model) and its chunks and body."""

    __slots__ = ("chat", "created", "id", "model", "n", "object")

    def __init__(self, endpoint: Endpoint, model: str, n: int) -> None:
        self.chat = endpoint is Endpoint.CHAT
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + secrets.token_hex(12)
        self.object = "chat.completion" if self.chat else "text_completion"
        self.created = int(time.time())
        self.model = model
        self.n = n

    def opening(self) -> list[Chunk]:
        if not self.chat:
            return []
        return [self._chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                              "logprobs": None, "finish_reason": None}]) for i in range(self.n)]

    def chunks(self, pieces: list[Piece]) -> list[Chunk]:
        out = []
        for piece in pieces:
            if piece.text:
                out.append(self._chunk([self._choice(piece.index, piece.text, None)]))
            if piece.finish_reason:
                out.append(self._chunk([self._choice(piece.index, "", piece.finish_reason)]))
        return out

    def usage_chunk(self, counted: Counted) -> Chunk:
        return self._chunk([], usage=_usage(counted))

    def body(self, texts: list[list[str]], finishes: list[str | None],
             counted: Counted) -> dict[str, Any]:
        """The non-streamed response: each choice's text and finish reason."""
        choices: list[dict[str, Any]] = []
        for index, (parts, finish) in enumerate(zip(texts, finishes, strict=True)):
            text = "".join(parts)
            if self.chat:
                choices.append({"index": index, "logprobs": None, "finish_reason": finish,
                                "message": {"role": "assistant", "content": text,
                                            "refusal": None, "annotations": []}})
            else:
                choices.append({"index": index, "text": text, "logprobs": None,
                                "finish_reason": finish})
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.model, "choices": choices, "usage": _usage(counted)}

    def _choice(self, index: int, text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            return {"index": index, "delta": {"content": text} if text else {},
                    "logprobs": None, "finish_reason": finish}
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}

    def _chunk(self, choices: list[dict[str, Any]],
               usage: dict[str, Any] | None = None) -> Chunk:
        kind = self.object + ".chunk" if self.chat else self.object
        data: dict[str, Any] = {"id": self.id, "object": kind, "created": self.created,
                                "model": self.model, "choices": choices}
        if usage is not None:
            data["usage"] = usage
        return Chunk(data)


def _usage(counted: Counted) -> dict[str, Any]:
    return Usage(prompt_tokens=counted.prompt_tokens,
                 completion_tokens=counted.completion_tokens).to_openai()

"""Per-step pieces of a local generation: token-to-text decoding, stop handling, logit shaping.

Everything here runs inside ``model.generate`` in a worker thread, once per
token step, so it is kept to a few list operations per choice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase, StoppingCriteria

from llmport.providers.hf_request import GenerationRequest, Piece
from llmport.providers.stop_sequences import StopMatcher

CONTEXT_TOKENS = 5  # prompt tokens a decoder starts from, so a first token's leading space shows


class IncrementalDecoder:
    """Text of a growing token sequence, delta by delta, never splitting a UTF-8 character.

    Decoding only a short window (``prefix``..end) keeps each step cheap;
    comparing it with the window's known text gives the new characters, which
    stay held back while they end in an incomplete byte sequence (U+FFFD).
    """

    __slots__ = ("_ids", "_prefix", "_read", "_tokenizer")

    def __init__(self, tokenizer: PreTrainedTokenizerBase, context: list[int]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(context)
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, token: int) -> str:
        self._ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        decode = self._tokenizer.decode
        known = decode(self._ids[self._prefix:self._read], skip_special_tokens=True)
        text = decode(self._ids[self._prefix:], skip_special_tokens=True)
        if len(text) <= len(known) or (text.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(known):]


class _Choice:
    __slots__ = ("decoder", "done", "matcher", "tokens")

    def __init__(self, decoder: IncrementalDecoder, stops: list[str]) -> None:
        self.decoder = decoder
        self.matcher = StopMatcher(stops)
        self.tokens = 0
        self.done = False

    def finish(self) -> tuple[str, str]:
        """The text still held back and the finish reason, at the end of the budget."""
        text = self.matcher.feed(self.decoder.flush())
        reason = "stop" if self.matcher.stopped else "length"
        self.done = True
        return text + self.matcher.flush(), reason


class TokenSink(StoppingCriteria):
    """Called by ``generate`` after every token step: turns the new tokens into pieces of text
    for the client, and tells ``generate`` which choices are finished.

    A stopping criterion rather than a streamer because it sees each step's
    tokens *and* decides whether to go on: a stop sequence or a cancelled job
    ends generation on the step that produced it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, request: GenerationRequest,
                 budget: int, eos_ids: frozenset[int], prompt_ids: list[int],
                 cancel: threading.Event, emit: Callable[[list[Piece]], None]) -> None:
        context = prompt_ids[-CONTEXT_TOKENS:]
        self.choices = [_Choice(IncrementalDecoder(tokenizer, context), request.stop)
                        for _ in range(request.n)]
        self.budget = budget
        self.eos_ids = eos_ids
        self.cancel = cancel
        self.emit = emit
        self.steps_after_cancel = 0

    @property
    def completion_tokens(self) -> int:
        return sum(choice.tokens for choice in self.choices)

    def __call__(self, input_ids: torch.LongTensor, scores: Any,
                 **kwargs: Any) -> torch.BoolTensor:
        if self.cancel.is_set():
            self.steps_after_cancel += 1
            return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        pieces: list[Piece] = []
        for index, token in enumerate(input_ids[:, -1].tolist()):
            choice = self.choices[index]
            if choice.done:
                continue
            choice.tokens += 1
            if token in self.eos_ids:
                text, _ = choice.finish()
                pieces.append(Piece(index, text, "stop"))
                continue
            text = choice.matcher.feed(choice.decoder.push(token))
            if choice.matcher.stopped:
                choice.done = True
                pieces.append(Piece(index, text, "stop"))
            elif choice.tokens >= self.budget:
                rest, reason = choice.finish()
                pieces.append(Piece(index, text + rest, reason))
            elif text:
                pieces.append(Piece(index, text))
        if pieces:
            self.emit(pieces)
        done = [choice.done for choice in self.choices]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def finish_all(self) -> None:
        """After ``generate`` returned: close the choices it ended on its own (length)."""
        if self.cancel.is_set():
            return
        pieces = []
        for index, choice in enumerate(self.choices):
            if not choice.done:
                text, reason = choice.finish()
                pieces.append(Piece(index, text, reason))
        if pieces:
            self.emit(pieces)


class LogitBias(LogitsProcessor):
    """OpenAI's ``logit_bias``: added to the logits of the named tokens (model's own ids)."""

    def __init__(self, bias: dict[int, float], device: str) -> None:
        self.ids = torch.tensor(list(bias), device=device)
        self.values = torch.tensor(list(bias.values()), device=device)

    def __call__(self, input_ids: torch.LongTensor,
                 scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.ids] += self.values.to(scores.dtype)
        return scores


class Penalties(LogitsProcessor):
    """OpenAI's presence and frequency penalties, over the tokens generated so far."""

    def __init__(self, prompt_tokens: int, presence: float, frequency: float) -> None:
        self.prompt_tokens = prompt_tokens
        self.presence = presence
        self.frequency = frequency

    def __call__(self, input_ids: torch.LongTensor,
                 scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_tokens:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones_like(generated, dtype=scores.dtype))
        penalty = counts * self.frequency + (counts > 0).to(scores.dtype) * self.presence
        return scores - penalty

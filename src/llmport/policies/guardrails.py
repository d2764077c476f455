"""Guardrails policy: checks a request's text before it goes upstream, and the answer's after.

In: the length of the text and the number of messages, deny patterns, prompt-injection
phrases (user and tool messages) and personal data (redacted or refused). Out: personal data
in the answer is redacted, or the answer ends there with ``finish_reason: content_filter``.
A refusal is a 400 naming the check and where it matched (never what matched). On a stream,
the output check holds back the last ``stream_holdback`` characters of each choice until
what follows shows whether they begin a match, and releases the rest at the end.

In the pipeline after the limits (a refused request still counts against them) and before
the cache (which then keys on the request as it went upstream). Not in the pipeline at all
unless a check is configured.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from llmport.errors import InvalidRequestError
from llmport.gateway.context import CallContext
from llmport.gateway.pipeline import Handler
from llmport.guardrails.detectors import INJECTION_PHRASES, Match, PhraseDetector, PIIDetector
from llmport.guardrails.settings import GuardrailsConfig
from llmport.guardrails.texts import Text, answer_texts, request_texts
from llmport.observability.events import EventBus, GuardrailTriggered
from llmport.types import Chunk, Endpoint, JSONResult, Result, StreamResult

INJECTION_ROLES = frozenset({"user", "tool", None})  # None: prompts and inputs
# The patterns scan about a megabyte in half a second (linear, but Python's): a request or
# an answer with more text than this is checked in a worker thread, so that the event loop
# (the GIL passing between them) goes on serving the other requests meanwhile.
IN_THREAD_FROM = 100_000


class GuardrailError(InvalidRequestError):
    default_code = "guardrail_blocked"


class GuardrailsPolicy:
    def __init__(self, config: GuardrailsConfig, events: EventBus) -> None:
        self.config = config
        self.events = events
        self.pii = PIIDetector(config.pii.entities, config.pii.patterns)
        self.deny = PhraseDetector(config.deny_patterns) if config.deny_patterns else None
        self.injection = PhraseDetector([*INJECTION_PHRASES, *config.injection.phrases],
                                        re.IGNORECASE | re.DOTALL) \
            if config.injection.action == "block" else None
        self.checks_input = config.checks_input
        self.output = config.pii.output
        self.output_action = "blocked" if self.output == "block" else "redacted"

    async def __call__(self, ctx: CallContext, call_next: Handler) -> Result:
        if self.checks_input:
            texts = list(request_texts(ctx.endpoint, ctx.body))
            await _run(_length(texts), self._check_request, ctx, texts)
        result = await call_next(ctx)
        if self.output == "off":
            return result
        if isinstance(result, JSONResult):
            if result.status == 200:
                await _run(_length(text for _, text in answer_texts(result.data)),
                           self._check_answer, ctx, result)
            return result
        return StreamResult(self._check_stream(ctx, result.chunks), close=result.close)

    # -- in ------------------------------------------------------------------------------
    def _check_request(self, ctx: CallContext, texts: list[Text]) -> None:
        config = self.config
        messages = ctx.body.get("messages")
        if config.max_messages and ctx.endpoint is Endpoint.CHAT and isinstance(messages, list) \
                and len(messages) > config.max_messages:
            self._refuse(ctx, "max_messages", "too_many_messages", "messages",
                         f"The request has {len(messages)} messages; this gateway accepts at "
                         f"most {config.max_messages}.")
        if config.max_input_chars:
            length = _length(texts)
            if length > config.max_input_chars:
                self._refuse(ctx, "max_input_chars", "input_too_long", None,
                             f"The request has {length} characters of text; this gateway "
                             f"accepts at most {config.max_input_chars}.")
        # Embeddings inputs are documents, not instructions to a model: not checked for them.
        injection = self.injection if ctx.endpoint is not Endpoint.EMBEDDINGS else None
        for text in texts:
            if self.deny is not None and self.deny.search(text.value):
                self._refuse(ctx, "deny_patterns", "content_denied", text.param,
                             f"{text.param} matches a pattern this gateway refuses.")
            if injection is not None and text.role in INJECTION_ROLES \
                    and injection.search(text.value):
                self._refuse(ctx, "injection", "prompt_injection_detected", text.param,
                             f"{text.param} looks like a prompt injection (it asks the model "
                             "to set aside its instructions); refused.")
        if config.pii.input != "off":
            self._pii_in(ctx, texts)

    def _pii_in(self, ctx: CallContext, texts: list[Text]) -> None:
        kinds: set[str] = set()
        for text in texts:
            matches = self.pii.find(text.value)
            if not matches:
                continue
            if self.config.pii.input == "block":
                self._refuse(ctx, "pii", "pii_detected", text.param,
                             f"{text.param} contains personal data "
                             f"({', '.join(sorted(_kinds(matches)))}), "
                             "which this gateway does not send upstream.")
            text.replace(self.pii.redact(text.value, matches))
            kinds |= _kinds(matches)
        if kinds:
            ctx.raw_body = None  # the body changed: it is serialised again
            self._emit(ctx, "pii", "redacted", "input", kinds)

    def _refuse(self, ctx: CallContext, check: str, code: str, param: str | None,
                message: str) -> None:
        self._emit(ctx, check, "blocked", "input", ())
        raise GuardrailError(message, param=param, code=code)

    # -- out -----------------------------------------------------------------------------
    def _check_answer(self, ctx: CallContext, result: JSONResult) -> None:
        kinds: set[str] = set()
        for choice, text in answer_texts(result.data):
            matches = self.pii.find(text.value)
            if not matches:
                continue
            kinds |= _kinds(matches)
            if self.output == "block":
                text.replace("")
                choice["finish_reason"] = "content_filter"
            else:
                text.replace(self.pii.redact(text.value, matches))
        if kinds:
            result.raw = None
            self._emit(ctx, "pii", self.output_action, "output", kinds)

    async def _check_stream(self, ctx: CallContext, chunks: AsyncIterator[Chunk]
                            ) -> AsyncIterator[Chunk]:
        held: dict[int, str] = {}  # choice index → text received, not yet sent
        kinds: set[str] = set()
        last: dict[str, Any] | None = None
        try:
            async for chunk in chunks:
                last = chunk.data
                choices = chunk.data.get("choices") or ()
                if not choices:
                    yield chunk
                    continue
                ended = False
                for choice in choices:
                    ended = self._filter_choice(choice, held, kinds) or ended
                chunk.raw = None
                yield chunk
                if ended:  # an output check ended the answer: nothing more is sent
                    break
            else:
                rest = [(index, text) for index, text in held.items() if text]
                if rest and last is not None:  # the stream ended without a finish_reason
                    yield _tail_chunk(last, rest, self.pii, kinds)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
            if kinds:
                self._emit(ctx, "pii", self.output_action, "output", kinds)

    def _filter_choice(self, choice: dict[str, Any], held: dict[int, str],
                       kinds: set[str]) -> bool:
        """Hold back, redact or cut this choice's new text; True when the answer ends here."""
        index = choice.get("index", 0)
        delta = choice.get("delta")
        holder, key = (delta, "content") if isinstance(delta, dict) else (choice, "text")
        incoming = holder.get(key) if isinstance(holder, dict) else None
        if not isinstance(incoming, str):
            incoming = ""
        text = held.get(index, "") + incoming
        final = choice.get("finish_reason") is not None
        if not text and not final:
            return False
        matches = self.pii.find(text)
        if matches and self.output == "block":
            kinds |= _kinds(matches)
            holder[key] = text[:matches[0].start]
            choice["finish_reason"] = "content_filter"
            held[index] = ""
            return True
        cut = len(text) if final else max(0, len(text) - self.config.stream_holdback)
        for match in matches:  # a match running past the cut may go on: hold it all back
            if match.start < cut < match.end:
                cut = match.start
        released = [match for match in matches if match.end <= cut]
        kinds |= _kinds(released)
        if incoming or text[:cut]:
            holder[key] = self.pii.redact(text[:cut], released)
        held[index] = text[cut:]
        return False

    def _emit(self, ctx: CallContext, check: str, action: str, where: str,
              kinds: Iterable[str]) -> None:
        if self.events.wants(GuardrailTriggered):
            self.events.emit(GuardrailTriggered(ctx.request_id, check, action, where,
                                                tuple(sorted(kinds))))


def _kinds(matches: list[Match]) -> set[str]:
    """The kinds of personal data matched, as events, metrics and refusals name them."""
    return {match.kind.lower() for match in matches}


def _length(texts: Iterable[Text]) -> int:
    return sum(len(text.value) for text in texts)


async def _run(length: int, check: Callable[..., None], *args: Any) -> None:
    """``check(*args)`` here, or in a worker thread when it has ``length`` characters to scan."""
    if length < IN_THREAD_FROM:
        check(*args)
    else:
        await asyncio.to_thread(check, *args)


def _tail_chunk(last: dict[str, Any], rest: list[tuple[int, str]], pii: PIIDetector,
                kinds: set[str]) -> Chunk:
    """A last chunk with what was held back, for a stream that ended without saying so."""
    chat = last.get("object") == "chat.completion.chunk"
    choices = []
    for index, text in rest:
        matches = pii.find(text)
        kinds |= _kinds(matches)
        redacted = pii.redact(text, matches)
        choices.append({"index": index, "delta": {"content": redacted}, "finish_reason": None}
                       if chat else {"index": index, "text": redacted, "finish_reason": None})
    data: dict[str, Any] = {key: last[key] for key in ("id", "object", "created", "model")
                            if key in last}
    return Chunk({**data, "choices": choices})

"""The policy pipeline: one ordered list of policies folded once at start-up.

Every policy has the same shape, ``async def __call__(ctx, call_next)``, and
returns a result (a complete response or a stream) or raises an
``LLMPortError``. A policy that must see output wraps the stream's iterator;
it never buffers a stream unless that is its job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from time import perf_counter
from typing import Protocol

from llmport.gateway.context import CallContext
from llmport.types import Result

Handler = Callable[[CallContext], Awaitable[Result]]


class Policy(Protocol):
    async def __call__(self, ctx: CallContext, call_next: Handler) -> Result: ...


def fold(policies: Sequence[Policy], terminal: Handler, timed: bool = False) -> Handler:
    """Compose ``policies`` (outermost first) around ``terminal`` into one handler.

    ``timed`` (tracing on) notes in ``ctx.marks`` when each policy, and then the
    terminal, was entered: a policy's own time runs from its mark to the next one
    (or to the end of the request, when it answered or refused by itself). The
    decision is taken here, once, so an untraced pipeline pays nothing for it.
    """
    handler = _marked(TERMINAL, terminal) if timed else terminal
    for policy in reversed(policies):
        if timed:
            name = type(policy).__name__.removesuffix("Policy").lower()
            handler = _marked(name, partial(policy, call_next=handler))
        else:
            handler = partial(policy, call_next=handler)
    return handler


TERMINAL = ""  # the mark of the terminal handler (the router): it ends the last policy's time


def _marked(name: str, handler: Handler) -> Handler:
    # A plain function handing back the handler's coroutine: the mark costs no
    # coroutine of its own (a frame, an await and a send per policy per request).
    def marked(ctx: CallContext) -> Awaitable[Result]:
        marks = ctx.marks
        if marks is None:
            ctx.marks = [(name, perf_counter())]
        else:
            marks.append((name, perf_counter()))
        return handler(ctx)

    return marked

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

    ``timed`` (tracing on) records each policy's own time in ``ctx.marks``; the
    decision is taken here, once, so an untraced pipeline pays nothing for it.
    """
    handler = terminal
    for policy in reversed(policies):
        handler = partial(_timed(policy) if timed else policy, call_next=handler)
    return handler


def _timed(policy: Policy) -> Policy:
    name = type(policy).__name__.removesuffix("Policy").lower()

    async def timed(ctx: CallContext, call_next: Handler) -> Result:
        began = perf_counter()
        marked = False

        async def onward(ctx: CallContext) -> Result:
            nonlocal marked
            marked = True
            if ctx.marks is not None:
                ctx.marks.append((name, began, perf_counter()))
            return await call_next(ctx)

        try:
            return await policy(ctx, onward)
        finally:
            if not marked and ctx.marks is not None:  # it answered or refused by itself
                ctx.marks.append((name, began, perf_counter()))

    return timed

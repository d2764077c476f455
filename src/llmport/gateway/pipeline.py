"""The policy pipeline: one ordered list of policies folded once at start-up.

Every policy has the same shape, ``async def __call__(ctx, call_next)``, and
returns a result (a complete response or a stream) or raises an
``LLMPortError``. A policy that must see output wraps the stream's iterator;
it never buffers a stream unless that is its job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Protocol

from llmport.gateway.context import CallContext
from llmport.types import Result

Handler = Callable[[CallContext], Awaitable[Result]]


class Policy(Protocol):
    async def __call__(self, ctx: CallContext, call_next: Handler) -> Result: ...


def fold(policies: Sequence[Policy], terminal: Handler) -> Handler:
    """Compose ``policies`` (outermost first) around ``terminal`` into one handler."""
    handler = terminal
    for policy in reversed(policies):
        handler = partial(policy, call_next=handler)
    return handler

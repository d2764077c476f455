"""Hedged requests: a second attempt on another deployment when the first is slow to start.

If the first attempt has produced no first token (or, unstreamed, no answer)
after ``hedge_after`` seconds, a second starts on another deployment; the
first to succeed wins and the other is cancelled, its stream closed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from llmport.gateway.context import CallContext
from llmport.types import Result, StreamResult

if TYPE_CHECKING:
    from llmport.routing.deployment import Deployment
    from llmport.routing.router import Router


async def race(router: Router, ctx: CallContext, model: str, first: Deployment,
               pool: list[Deployment], strategy: Any, hedge_after: float) -> Result:
    leader = asyncio.ensure_future(router.attempt(ctx, model, first, ctx.body))
    done, _ = await asyncio.wait({leader}, timeout=hedge_after)
    if done:
        return leader.result()
    second = router.pick(pool, strategy, ctx.stream, {first}, {first})
    if second is None:
        return await leader
    hedge = asyncio.ensure_future(router.attempt(ctx, model, second, ctx.body, hedged=True))
    tasks = (leader, hedge)
    winner: asyncio.Future[Result] | None = None
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        winner = next((t for t in tasks if t.done() and t.exception() is None), None)
        if winner is None:  # one failed: the other is the answer (or the error)
            other = hedge if leader.done() else leader
            await asyncio.wait([other])
            winner = other if other.exception() is None else None
        if winner is None:
            raise leader.exception() or hedge.exception()  # type: ignore[misc]
        chosen = second if winner is hedge else first
        ctx.served_model, ctx.deployment = model, chosen.name
        return winner.result()
    finally:
        for task in tasks:
            if task is not winner:
                await _cancel(task)


async def _cancel(task: asyncio.Future[Result]) -> None:
    """Stop a losing attempt; close its stream if it got that far."""
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    elif not task.cancelled() and task.exception() is None:
        await _discard(task.result())


async def _discard(result: Result) -> None:
    if isinstance(result, StreamResult):
        await result.aclose()

"""Stream rescue: finish an answer on another deployment after its stream broke.

Opt-in (``router.stream_rescue: continue``). The client already holds part of
the answer, so the rescue must produce exactly the rest:

1. on a deployment that can continue a trailing assistant message (``prefill``
   capability), ask for the continuation of what was sent;
2. otherwise, or if it refuses the prefill, restart the request there and
   relay its answer from the point the client has reached, provided the new
   answer begins with exactly what was sent;
3. if neither works, the stream ends with an error event carrying the
   original failure (never the fallback's own rejection).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from llmport.errors import LLMPortError, UpstreamProtocolError
from llmport.gateway.context import CallContext
from llmport.routing.streams import SentText
from llmport.types import Chunk, StreamResult

if TYPE_CHECKING:
    from llmport.routing.deployment import Deployment
    from llmport.routing.router import Router


async def rescue(router: Router, ctx: CallContext, model: str, failed: Deployment,
                 sent: SentText, error: LLMPortError) -> AsyncIterator[Chunk]:
    text = sent.text
    for target_model, deployment in router.rescue_candidates(ctx, model, failed):
        router.note_fallback(ctx, model, target_model, "stream_rescue")
        if deployment.provider.capabilities.prefill:
            continued = await _start(router, ctx, target_model, deployment, _prefilled(ctx, text))
            if continued is not None:
                try:
                    async for chunk in _continuation(continued.chunks, sent.id):
                        yield chunk
                finally:
                    await continued.aclose()
                return
        restarted = await _start(router, ctx, target_model, deployment, ctx.body)
        if restarted is None:
            continue
        try:
            async for chunk in _after(restarted.chunks, text, sent.id):
                yield chunk
            return
        except UpstreamProtocolError:
            continue  # that answer went another way; try the next deployment
        finally:
            await restarted.aclose()
    raise error


async def _start(router: Router, ctx: CallContext, model: str, deployment: Deployment,
                 body: dict[str, Any]) -> StreamResult | None:
    if not deployment.breaker.acquire():
        return None
    try:
        result = await router.attempt(ctx, model, deployment, body, rescuable=False)
    except LLMPortError:
        return None
    assert isinstance(result, StreamResult)
    return result


def _prefilled(ctx: CallContext, text: str) -> dict[str, Any]:
    messages = [*ctx.body["messages"], {"role": "assistant", "content": text}]
    return {**ctx.body, "messages": messages}


def _relabel(chunk: Chunk, stream_id: str | None) -> Chunk:
    if stream_id is not None and chunk.data.get("id") != stream_id:
        chunk.data["id"] = stream_id
        chunk.raw = None
    return chunk


async def _continuation(chunks: AsyncIterator[Chunk], stream_id: str | None
                        ) -> AsyncIterator[Chunk]:
    """The continuation's chunks under the original id, without a second role chunk."""
    async for chunk in chunks:
        for choice in chunk.data.get("choices") or ():
            delta = choice.get("delta") or {}
            if "role" in delta:
                del delta["role"]
                chunk.raw = None
        yield _relabel(chunk, stream_id)


async def _after(chunks: AsyncIterator[Chunk], sent: str, stream_id: str | None
                 ) -> AsyncIterator[Chunk]:
    """A restarted answer, skipping the ``sent`` prefix it must begin with."""
    position = 0
    async for chunk in chunks:
        choices = chunk.data.get("choices") or ()
        if position < len(sent) and choices:
            delta = choices[0].get("delta") or {}
            delta.pop("role", None)
            content = delta.get("content") or ""
            overlap = min(len(content), len(sent) - position)
            if content[:overlap] != sent[position:position + overlap]:
                raise UpstreamProtocolError("the restarted answer differs from what was sent")
            position += overlap
            if choices[0].get("finish_reason") and position < len(sent):
                raise UpstreamProtocolError("the restarted answer is shorter than what was sent")
            if overlap == len(content) and not choices[0].get("finish_reason"):
                continue  # entirely already sent
            delta["content"] = content[overlap:]
            chunk.raw = None
        yield _relabel(chunk, stream_id)

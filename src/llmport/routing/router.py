"""The router: the pipeline's terminal handler.

It resolves the public model name to its deployments, picks one, calls its
provider, retries retryable failures on the deployments left, and primes
streams: a stream is handed back only once its first output has arrived, so
a failure before that is an ordinary error (or a transparent retry) rather
than a broken stream.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from time import perf_counter

from llmport.config import Config, ModelConfig
from llmport.errors import LLMPortError, ModelNotFoundError, UpstreamTimeoutError, is_retryable
from llmport.gateway.context import CallContext
from llmport.providers.base import Provider
from llmport.providers.registry import provider_class
from llmport.types import Chunk, JSONResult, Result, StreamResult


class Deployment:
    """One config entry and the provider instance serving it."""

    __slots__ = ("config", "in_flight", "provider")

    def __init__(self, config: ModelConfig, provider: Provider) -> None:
        self.config = config
        self.provider = provider
        self.in_flight = 0

    @property
    def name(self) -> str:
        return self.provider.name


class Router:
    def __init__(self, config: Config) -> None:
        self.num_retries = config.router.num_retries
        self.pools: dict[str, list[Deployment]] = {}
        for model in config.models:
            provider = provider_class(model.provider)(model)
            self.pools.setdefault(model.name, []).append(Deployment(model, provider))

    @property
    def deployments(self) -> list[Deployment]:
        return [d for pool in self.pools.values() for d in pool]

    async def start(self) -> None:
        for deployment in self.deployments:
            await deployment.provider.start()

    async def aclose(self) -> None:
        for deployment in self.deployments:
            await deployment.provider.aclose()

    def pool(self, model: str) -> list[Deployment]:
        pool = self.pools.get(model)
        if pool is None:
            raise ModelNotFoundError(model)
        return pool

    async def __call__(self, ctx: CallContext) -> Result:
        pool = self.pool(ctx.model)
        candidates = [d for d in pool if d.provider.supports(ctx.endpoint)]
        if not candidates:
            raise pool[0].provider.unsupported(ctx.endpoint)
        order = _weighted_order(candidates)
        attempt = 0
        while True:
            deployment = order[attempt % len(order)]
            try:
                return await self._attempt(ctx, deployment)
            except LLMPortError as error:
                if not is_retryable(error) or attempt >= self.num_retries:
                    raise
            attempt += 1
            await asyncio.sleep(random.uniform(0, min(2.0, 0.1 * 2 ** attempt)))

    async def _attempt(self, ctx: CallContext, deployment: Deployment) -> Result:
        ctx.attempts += 1
        ctx.deployment = deployment.name
        ctx.served_model = deployment.config.name
        provider = deployment.provider
        started = perf_counter()
        deployment.in_flight += 1
        try:
            if not ctx.stream:
                result: JSONResult = await provider.complete(ctx, ctx.endpoint, ctx.body)
                ctx.usage = result.usage
                return result
            iterator = provider.stream(ctx, ctx.endpoint, ctx.body)
            try:
                first = await _prime(iterator, deployment.config.first_token_timeout,
                                     deployment.name)
            except BaseException:
                await iterator.aclose()  # type: ignore[attr-defined]
                raise
            ctx.first_token_at = perf_counter()
            return StreamResult(_track(ctx, first, iterator))
        finally:
            deployment.in_flight -= 1
            ctx.upstream_s += perf_counter() - started


async def _prime(iterator: AsyncIterator[Chunk], limit: float | None,
                 name: str) -> list[Chunk]:
    """Read chunks until the first one with output (or the end of the stream)."""
    first: list[Chunk] = []
    try:
        async with asyncio.timeout(limit):
            async for chunk in iterator:
                first.append(chunk)
                if chunk.has_output:
                    break
    except TimeoutError:
        raise UpstreamTimeoutError(f"{name} sent no first token within {limit:g}s") from None
    return first


async def _track(ctx: CallContext, first: list[Chunk],
                 iterator: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """Yield the primed chunks, then the rest, noting usage as it goes by."""
    try:
        for chunk in first:
            if "usage" in chunk.data:
                ctx.usage = chunk.usage or ctx.usage
            yield chunk
        async for chunk in iterator:
            if "usage" in chunk.data:
                ctx.usage = chunk.usage or ctx.usage
            yield chunk
    finally:
        await iterator.aclose()  # type: ignore[attr-defined]


def _weighted_order(deployments: list[Deployment]) -> list[Deployment]:
    """Deployments in a random order drawn by weight (first = most likely the heaviest)."""
    if len(deployments) == 1:
        return deployments
    remaining = list(deployments)
    order = []
    while remaining:
        weights = [max(d.config.weight, 1e-9) for d in remaining]
        pick = random.choices(range(len(remaining)), weights=weights)[0]
        order.append(remaining.pop(pick))
    return order

"""The router: the pipeline's terminal handler.

For one request it walks the model chain (the requested model, then its
``fallbacks``; a context-length error switches to ``context_window_fallbacks``
and a content-policy refusal is returned unless ``content_policy_fallbacks``
names somewhere to go). Within a model it picks a healthy deployment by the
model's strategy, passes the deployment's admission queue, calls its
provider, and retries retryable failures with backoff — on another
deployment when there is one, never again on one that timed out silently.

Streams are primed (handed back only once their first output has arrived),
so a failure before that is retried transparently; after it, a failure ends
the stream with an error event unless stream rescue is on (``rescue.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from time import monotonic, perf_counter
from typing import Any

from llmport.config import Config
from llmport.errors import (
    CapacityExceededError,
    ContentPolicyError,
    ContextLengthExceededError,
    LLMPortError,
    ModelNotFoundError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
    is_retryable,
)
from llmport.gateway.context import CallContext
from llmport.observability.events import (
    AttemptFinished,
    AttemptStarted,
    BreakerStateChanged,
    EventBus,
    FallbackUsed,
    QueueWaited,
    hook_failed,
)
from llmport.providers.registry import provider_class
from llmport.routing.admission import request_priority
from llmport.routing.breaker import BreakerState
from llmport.routing.deployment import Deployment, Lease
from llmport.routing.hedging import race
from llmport.routing.rescue import rescue
from llmport.routing.retry import backoff_delay
from llmport.routing.strategies import choose
from llmport.routing.streams import SentText, estimated_usage_chunk, prime
from llmport.running import current_task
from llmport.timers import TaskDeadline
from llmport.types import Chunk, Endpoint, JSONResult, Result, StreamResult


class Router:
    def __init__(self, config: Config, events: EventBus | None = None) -> None:
        self.config = config.router
        self.events = events or EventBus()
        # Every attempt emits these two: their subscribers' live lists, called directly.
        self._on_attempt = self.events.listeners(AttemptStarted)
        self._on_attempt_end = self.events.listeners(AttemptFinished)
        self._attempt_end_batch = self.events.batch(AttemptFinished)
        self._attempt_end_batch.make = AttemptFinished
        self.pools: dict[str, list[Deployment]] = {}
        for model in config.models:
            provider = provider_class(model.provider)(model)
            deployment = Deployment(model, provider, self.config.circuit_breaker)
            deployment.breaker.on_change = self._breaker_hook(deployment)
            self.pools.setdefault(model.name, []).append(deployment)

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
        self.pool(ctx.model)  # an unknown model is a 404 before anything else
        limit = self.config.request_timeout
        task = current_task()
        try:
            with TaskDeadline(task, task.get_loop().time() + limit):
                return await self._route(ctx)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"No deployment answered within the request budget of {limit:g}s.") from None

    # -- the model chain -----------------------------------------------------------------
    async def _route(self, ctx: CallContext) -> Result:
        chain = [ctx.model, *self.config.fallbacks.get(ctx.model, ())]
        index = 0
        while True:
            model = chain[index]
            try:
                return await self._serve(ctx, model)
            except LLMPortError as error:
                special = self._special_fallbacks(error)
                if special is not None:
                    # Not retried on the same model: sent where the config says, if anywhere,
                    # ahead of the ordinary fallbacks.
                    reason, table = special
                    ahead = [m for m in table.get(model, ()) if m not in chain[:index + 1]]
                    if not ahead:
                        raise
                    chain = [*chain[:index + 1], *ahead]
                elif not is_retryable(error) or index + 1 >= len(chain):
                    raise
                else:
                    reason = "error"
            index += 1
            self.note_fallback(ctx, model, chain[index], reason)

    def _special_fallbacks(self, error: LLMPortError) -> tuple[str, dict[str, list[str]]] | None:
        if isinstance(error, ContextLengthExceededError):
            return "context_window", self.config.context_window_fallbacks
        if isinstance(error, ContentPolicyError):
            return "content_policy", self.config.content_policy_fallbacks
        return None

    async def _serve(self, ctx: CallContext, model: str) -> Result:
        pool = [d for d in self.pools[model] if d.provider.supports(ctx.endpoint)]
        if not pool:
            raise self.pools[model][0].provider.unsupported(ctx.endpoint)
        routing = self.config.for_model(model)
        strategy = routing.strategy or self.config.strategy
        timed_out: set[Deployment] = set()  # silent once: not waited on again
        tried: set[Deployment] = set()
        last: LLMPortError | None = None
        for retry in range(self.config.num_retries + 1):
            if ctx.attempts >= self.config.max_attempts:
                break
            deployment = self.pick(pool, strategy, ctx.stream, tried | timed_out, timed_out)
            if deployment is None:
                if last is not None:
                    raise last
                raise self._unavailable(model, pool)
            try:
                if routing.hedge_after is not None:
                    return await race(self, ctx, model, deployment, pool, strategy,
                                      routing.hedge_after)
                return await self.attempt(ctx, model, deployment, ctx.body)
            except LLMPortError as error:
                if not is_retryable(error):
                    raise
                last = error
                tried.add(deployment)
                if isinstance(error, UpstreamTimeoutError | CapacityExceededError):
                    timed_out.add(deployment)  # silent, or full: not waited on again
            left = [d for d in pool if d not in timed_out and d.breaker.available()]
            if not left:
                break
            delay = backoff_delay(self.config, retry, last, any(d not in tried for d in left))
            if delay > self.config.max_retry_after:
                break  # the upstream asks for a longer pause than we wait: move on
            if retry < self.config.num_retries and delay:
                await asyncio.sleep(delay)
        assert last is not None
        raise last

    def pick(self, pool: list[Deployment], strategy: Any, stream: bool,
              avoid: set[Deployment], exclude: set[Deployment]) -> Deployment | None:
        """Choose and claim a deployment, preferring ones not in ``avoid``."""
        skip = set(avoid)
        for _ in range(2 * len(pool) + 1):
            deployment = choose(pool, strategy, stream, skip)
            if deployment is None:
                if skip == exclude:
                    return None
                skip = set(exclude)  # nothing fresh left: a retry may reuse a failed one
                continue
            if deployment.breaker.acquire():
                return deployment
            skip.add(deployment)  # its half-open probe is taken by another request
        return None

    def _unavailable(self, model: str, pool: list[Deployment]) -> ServiceUnavailableError:
        wait = min((d.breaker.retry_after() for d in pool), default=1.0)
        return ServiceUnavailableError(
            f"No deployment of `{model}` is available right now (circuit open).",
            headers={"retry-after": str(max(1, round(wait + 0.5)))})

    # -- one attempt -------------------------------------------------------------------
    async def attempt(self, ctx: CallContext, model: str, deployment: Deployment,
                      body: dict[str, Any], *, hedged: bool = False,
                      rescuable: bool = True) -> Result:
        """Call one deployment whose breaker was claimed; primes streams."""
        ctx.attempts += 1
        ctx.deployment = deployment.name
        priority = request_priority(ctx.principal, ctx.header(b"x-llmport-priority"))
        queue = deployment.queue
        try:
            waited = await queue.acquire(priority)
        except BaseException as error:
            deployment.breaker.release()
            if isinstance(error, LLMPortError):
                self._emit_queue(deployment, 0.0, admitted=False)
            raise
        if waited:
            self._emit_queue(deployment, waited, admitted=True)
        number = ctx.attempts
        if self._on_attempt:
            event = AttemptStarted(ctx, number, model, deployment.name, deployment.upstream_model,
                                   deployment.provider_name)
            for subscriber in self._on_attempt:
                try:
                    subscriber(event)
                except Exception:  # a hook's bug is not the request's (see Gateway.finish)
                    hook_failed(subscriber, event)
        started = monotonic()
        provider = deployment.provider
        try:
            if not ctx.stream:
                result: JSONResult = await provider.complete(ctx, ctx.endpoint, body)
            else:
                iterator = provider.stream(ctx, ctx.endpoint, body)
                try:
                    first = await prime(iterator, deployment.config.first_token_timeout,
                                        deployment.name)
                except BaseException:
                    await iterator.aclose()  # type: ignore[attr-defined]
                    raise
        except BaseException as error:
            elapsed = monotonic() - started
            queue.release(elapsed)
            ctx.upstream_s += elapsed
            self._settle(ctx, model, deployment, error, elapsed, hedged, number)
            raise
        elapsed = monotonic() - started
        ctx.upstream_s += elapsed
        deployment.breaker.record_success()
        deployment.observe_latency(elapsed, ctx.stream)
        self._emit_attempt(ctx, model, deployment, None, elapsed, hedged, number)
        ctx.served_model, ctx.deployment = model, deployment.name
        if not ctx.stream:
            queue.release(elapsed)
            ctx.usage = result.usage
            choices = result.data.get("choices")
            if choices and isinstance(choices[0], dict):
                ctx.finish_reason = choices[0].get("finish_reason")
            return result
        if ctx.first_token_at is None:
            ctx.first_token_at = perf_counter()
        lease = Lease(deployment, iterator, started, number)
        return StreamResult(self._relay(ctx, model, deployment, first, lease, rescuable),
                            close=lease.release)

    def _settle(self, ctx: CallContext, model: str, deployment: Deployment,
                error: BaseException, elapsed: float, hedged: bool, number: int) -> None:
        """Book a failed (or abandoned) attempt against the deployment's health."""
        if isinstance(error, UpstreamError) and is_retryable(error):
            deployment.breaker.record_failure()
            deployment.observe_error(error)
        elif isinstance(error, LLMPortError):
            deployment.breaker.record_success()  # it answered; the request was the problem
        else:
            deployment.breaker.release()  # cancelled: no verdict
        if isinstance(error, Exception):
            self._emit_attempt(ctx, model, deployment, error, elapsed, hedged, number)

    async def _relay(self, ctx: CallContext, model: str, deployment: Deployment,
                     first: list[Chunk], lease: Lease, rescuable: bool) -> AsyncIterator[Chunk]:
        """Relay a primed stream, noting usage; on a mid-stream failure, rescue or raise."""
        sent = SentText() if rescuable and self._rescues(ctx, model) else None
        iterator = lease.iterator
        outputs, last = 0, None
        try:
            for chunk in first:
                outputs, last = outputs + 1, chunk
                _note(ctx, chunk, sent)
                yield chunk
            while True:
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                except LLMPortError as error:
                    await lease.release()
                    self._settle(ctx, model, deployment, error, lease.held(), False, lease.number)
                    if sent is None or not sent.rescuable:
                        raise
                    async for rescued in rescue(self, ctx, model, deployment, sent, error):
                        yield rescued
                    return
                outputs, last = outputs + 1, chunk
                _note(ctx, chunk, sent)
                yield chunk
            if ctx.usage is None:
                yield estimated_usage_chunk(ctx, last, outputs)
        finally:
            await lease.release()

    def _rescues(self, ctx: CallContext, model: str) -> bool:
        mode = self.config.for_model(model).stream_rescue or self.config.stream_rescue
        return mode == "continue" and ctx.endpoint is Endpoint.CHAT

    def rescue_candidates(self, ctx: CallContext, model: str,
                          failed: Deployment) -> Iterator[tuple[str, Deployment]]:
        """Where a broken stream may be finished: the model's other deployments, then fallbacks."""
        chain = [model, *self.config.fallbacks.get(model, ())]
        for name in chain:
            for deployment in self.pools[name]:
                if deployment is not failed and deployment.provider.supports(ctx.endpoint) \
                        and deployment.breaker.available():
                    yield name, deployment

    # -- events --------------------------------------------------------------------------
    def note_fallback(self, ctx: CallContext, from_model: str, to_model: str,
                      reason: str) -> None:
        if self.events.wants(FallbackUsed):
            self.events.emit(FallbackUsed(ctx.request_id, from_model, to_model, reason))

    def _emit_attempt(self, ctx: CallContext, model: str, deployment: Deployment,
                      error: BaseException | None, elapsed: float, hedged: bool,
                      number: int) -> None:
        subscribers = self._on_attempt_end
        batch = self._attempt_end_batch
        if not subscribers and not batch.handlers:
            return
        status = getattr(error, "status_code", None) if error is not None else 200
        queued: Any = (ctx, model, deployment.name, error is None,
                       type(error).__name__ if error is not None else None, status, elapsed,
                       hedged, number)
        if subscribers:  # built here only for them (as Gateway.finish)
            event = queued = AttemptFinished(*queued)
            for subscriber in subscribers:
                try:
                    subscriber(event)
                except Exception:
                    hook_failed(subscriber, event)
        if batch.handlers:  # as Gateway.finish
            batch.events.append(queued)
            if not self.events.scheduled:
                self.events.schedule()

    def _emit_queue(self, deployment: Deployment, waited: float, admitted: bool) -> None:
        if self.events.wants(QueueWaited):
            self.events.emit(QueueWaited(deployment.name, waited, admitted,
                                         deployment.queue.waiting))

    def _breaker_hook(self, deployment: Deployment) -> Any:
        def changed(previous: BreakerState, state: BreakerState) -> None:
            if self.events.wants(BreakerStateChanged):
                self.events.emit(BreakerStateChanged(deployment.name, deployment.config.name,
                                                     previous.value, state.value))
        return changed


def _note(ctx: CallContext, chunk: Chunk, sent: SentText | None) -> None:
    data = chunk.data
    if data.get("usage"):
        ctx.usage = chunk.usage
    choices = data.get("choices")
    if choices and choices[0].get("finish_reason"):
        ctx.finish_reason = choices[0]["finish_reason"]
    if sent is not None:
        sent.add(data)

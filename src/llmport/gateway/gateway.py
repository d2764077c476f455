"""Gateway: owns the router, the policies and the event bus, built once from the config."""

from __future__ import annotations

from typing import Any

from llmport.config import Config
from llmport.errors import LLMPortError
from llmport.gateway.context import CallContext
from llmport.gateway.pipeline import Handler, Policy, fold
from llmport.observability.events import EventBus, RequestFinished, RequestStarted
from llmport.policies.auth import Authenticator
from llmport.policies.cache import CachePolicy
from llmport.routing.router import Router


class Gateway:
    """The request path without HTTP: authenticate, run the pipeline, report the outcome.

    Policy order is declared here, in one place (``_policies``)::

        authenticate → cache → router → provider
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events = EventBus()
        self.router = Router(config, self.events)
        master = config.auth.master_key
        self.authenticator = Authenticator(master.get_secret_value() if master else None)
        self.policies = self._policies()
        self.handle: Handler = fold(self.policies, self.router,
                                    timed=config.observability.tracing.enabled)
        self.ready = False
        self.in_flight = 0  # requests between arrival and finish()

    def _policies(self) -> list[Policy]:
        """The pipeline, in order (authentication ran before it, the router ends it)."""
        policies: list[Policy] = []
        if self.config.cache.enabled:
            policies.append(CachePolicy(self.config.cache, self.events))
        return policies

    async def start(self) -> None:
        await self.router.start()
        self.ready = True

    async def aclose(self) -> None:
        self.ready = False
        await self.router.aclose()

    def live_state(self) -> dict[str, Any]:
        """What is happening now, for gauges: requests in flight, queues, breakers."""
        return {"in_flight": self.in_flight, "deployments": {
            d.name: {"queued": d.queue.waiting, "breaker": d.breaker.state.value}
            for d in self.router.deployments}}

    def start_request(self, ctx: CallContext) -> None:
        self.in_flight += 1
        if self.events.active:
            self.events.emit(RequestStarted(ctx))

    def finish(self, ctx: CallContext, status: int, error: BaseException | None = None) -> None:
        """Report a finished request to the subscribers (logs, metrics, spend)."""
        self.in_flight -= 1
        if not self.events.active:
            return
        latency = ctx.elapsed()
        if isinstance(error, LLMPortError):
            error_type: str | None = type(error).__name__
            message: str | None = error.message
        elif error is not None:
            error_type, message = type(error).__name__, str(error)
        else:
            error_type = message = None
        self.events.emit(RequestFinished(
            request_id=ctx.request_id, endpoint=ctx.endpoint, dialect=ctx.dialect,
            model=ctx.model, served_model=ctx.served_model, deployment=ctx.deployment,
            principal_id=ctx.principal.id, stream=ctx.stream, status=status,
            error_type=error_type, error_message=message, attempts=ctx.attempts,
            latency_s=latency,
            overhead_s=ctx.overhead_s if ctx.overhead_s is not None else latency - ctx.upstream_s,
            ttft_s=(ctx.first_token_at - ctx.started) if ctx.first_token_at else None,
            usage=ctx.usage, skipped_chunks=ctx.skipped_chunks, trace_id=ctx.trace_id))

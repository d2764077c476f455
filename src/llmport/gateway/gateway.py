"""Gateway: owns the router, the policies and the event bus, built once from the config."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, Any

import structlog

from llmport.accounting.budgets import BudgetBook
from llmport.accounting.journal import SpendJournal
from llmport.accounting.spend import Prices, SpendRecorder, cost_of, new_record_id
from llmport.config import Config
from llmport.db.database import Database
from llmport.errors import LLMPortError
from llmport.gateway.context import CallContext
from llmport.gateway.pipeline import Handler, Policy, fold
from llmport.observability.events import EventBus, RequestFinished, RequestStarted, hook_failed
from llmport.policies.auth import Authenticator
from llmport.policies.cache import CachePolicy
from llmport.policies.guardrails import GuardrailsPolicy
from llmport.policies.idempotency import IdempotencyPolicy
from llmport.policies.limits import LimitsPolicy
from llmport.routing.router import Router
from llmport.routing.shared_breakers import SharedBreakers
from llmport.stores.base import StateStore
from llmport.stores.factory import open_store
from llmport.tenancy.principals import PrincipalResolver
from llmport.types import Endpoint, JSONResult

if TYPE_CHECKING:
    from llmport.tenancy.jwt_auth import JWTVerifier

log = structlog.get_logger("llmport.gateway")


class Gateway:
    """The request path without HTTP: authenticate, run the pipeline, report the outcome.

    Policy order is declared here, in one place (``_policies``)::

        authenticate → idempotency → limits & budgets → guardrails → cache → router → provider

    It also owns the state behind them: the database (tenants, spend log), the
    shared store (counters, leases, idempotency records, invalidations) and the
    spend journal.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events = EventBus()
        # Every request emits these two: their subscribers' live lists, called directly,
        # and the batch of the subscribers that take finished requests off the request path.
        self._on_started = self.events.listeners(RequestStarted)
        self._on_finished = self.events.listeners(RequestFinished)
        self._finished_batch = self.events.batch(RequestFinished)
        self._finished_batch.make = self._finished_event
        self.router = Router(config, self.events)
        self.prices = Prices((d.name, d.config) for d in self.router.deployments)
        self.store: StateStore = open_store(config.redis_url, config.redis_prefix)
        master = config.auth.master_key
        self.db = Database(config.database_location) if config.uses_database else None
        self.resolver: PrincipalResolver | None = None
        self.jwt: JWTVerifier | None = None
        if master is not None and self.db is not None:
            if config.auth.jwt is not None:
                from llmport.tenancy.jwt_auth import JWTVerifier  # PyJWT loads only when used

                self.jwt = JWTVerifier(config.auth.jwt)
            self.resolver = PrincipalResolver(self.db, self.store, self.jwt,
                                              config.auth.key_cache_ttl,
                                              config.auth.last_used_interval)
        self.authenticator = Authenticator(master.get_secret_value() if master else None,
                                           self.resolver, self.store,
                                           config.auth.signature_max_skew)
        self.budgets = BudgetBook(self.store, self.db)
        self.journal: SpendJournal | None = None
        if self.db is not None and config.spend_log.enabled:
            spend = config.spend_log
            self.journal = SpendJournal(spend.journal_dir or Path(config.data_dir) / "journal",
                                        self.db, flush_interval=spend.flush_interval,
                                        batch_size=spend.batch_size)
            self.events.subscribe(SpendRecorder(self.journal))
        self.shared_breakers: SharedBreakers | None = None
        if self.store.shared:
            self.shared_breakers = SharedBreakers(self.store, self.router.deployments)
            self.events.subscribe(self.shared_breakers)
        self.policies = self._policies()
        self.handle: Handler = fold(self.policies, self.router,
                                    timed=config.observability.tracing.enabled)
        self.ready = False
        self.in_flight = 0  # requests between arrival and finish()
        self._retention: asyncio.Task[None] | None = None

    def _policies(self) -> list[Policy]:
        """The pipeline, in order (authentication ran before it, the router ends it)."""
        config = self.config
        policies: list[Policy] = []
        if config.idempotency.enabled:
            policies.append(IdempotencyPolicy(config.idempotency, self.store,
                                              config.router.request_timeout + 60))
        policies.append(LimitsPolicy(config.limits, self.store, self.budgets, self.prices,
                                     self.events))
        if config.guardrails.enabled:
            policies.append(GuardrailsPolicy(config.guardrails, self.events))
        if config.cache.enabled:
            policies.append(CachePolicy(config.cache, self.events, self.store, self._embed))
        return policies

    async def _embed(self, model: str, text: str) -> list[float]:
        """``text``'s embedding by ``model``, through the router (the semantic cache's lookups:
        the gateway's own calls, outside any tenant's limits and spend)."""
        ctx = CallContext(f"req_embed_{new_record_id()}", Endpoint.EMBEDDINGS,
                          {"model": model, "input": text}, None, model)
        result = await self.router(ctx)
        if not isinstance(result, JSONResult):
            raise TypeError("an embeddings call answered with a stream")
        vector: list[float] = result.data["data"][0]["embedding"]
        return vector

    async def start(self) -> None:
        if self.db is not None:
            await asyncio.to_thread(Path(self.config.data_dir).mkdir, parents=True,
                                    exist_ok=True)
            await self.db.upgrade()
        if self.jwt is not None:
            await self.jwt.start()
        if self.resolver is not None:
            await self.resolver.start()
        if self.shared_breakers is not None:
            await self.shared_breakers.start()
        if self.journal is not None:
            await self.journal.start()
            days = self.config.spend_log.retention_days
            if days is not None and self.db is not None:
                self._retention = asyncio.create_task(_purge_every_hour(self.db, days))
        await self.router.start()
        self.ready = True

    async def aclose(self) -> None:
        self.ready = False
        if self._retention is not None:
            self._retention.cancel()
        await self.router.aclose()
        if self.journal is not None:
            await self.journal.aclose()
        if self.jwt is not None:
            await self.jwt.aclose()
        if self.resolver is not None:
            await self.resolver.aclose()  # its last writes need the database
        await self.store.aclose()
        if self.db is not None:
            await self.db.aclose()

    async def check_stores(self) -> dict[str, bool]:
        """Whether the database and the shared store answer (for /readyz)."""
        checks = {"store": await self.store.ping()}
        if self.db is not None:
            checks["database"] = await self.db.ping()
        return checks

    def live_state(self) -> dict[str, Any]:
        """What is happening now, for gauges: requests in flight, queues, breakers."""
        return {"in_flight": self.in_flight, "deployments": {
            d.name: {"queued": d.queue.waiting, "breaker": d.breaker.state.value}
            for d in self.router.deployments}}

    def start_request(self, ctx: CallContext) -> None:
        self.in_flight += 1
        if self._on_started:
            event = RequestStarted(ctx)
            for subscriber in self._on_started:
                try:
                    subscriber(event)
                except Exception:  # as in finish: a hook's bug is not the request's
                    hook_failed(subscriber, event)

    def finish(self, ctx: CallContext, status: int, error: BaseException | None = None) -> None:
        """Report a finished request to the subscribers (logs, metrics, spend)."""
        self.in_flight -= 1
        subscribers = self._on_finished
        batch = self._finished_batch
        if not subscribers and not batch.handlers:
            return
        latency = perf_counter() - ctx.started
        if error is None:
            error_type: str | None = None
            message: str | None = None
        elif isinstance(error, LLMPortError):
            error_type, message = type(error).__name__, error.message
        else:
            error_type, message = type(error).__name__, str(error)
        overhead = ctx.overhead_s
        if overhead is None:
            overhead = latency - ctx.upstream_s
        # The event's fields: the batch builds the event from them (Batch.make), unless a
        # subscriber needs it at once.
        queued: Any = (ctx, status, error_type, message, latency, overhead)
        if subscribers:
            event = queued = self._finished_event(*queued)
            for subscriber in subscribers:
                # Reported before the answer's last bytes go out: a subscriber's bug must
                # cost neither the answer nor the other subscribers (the spend record).
                try:
                    subscriber(event)
                except Exception:
                    hook_failed(subscriber, event)
        if batch.handlers:  # metrics, logs, spans: after the answer, with other requests'
            batch.events.append(queued)
            if not self.events.scheduled:
                self.events.schedule()

    def _finished_event(self, ctx: CallContext, status: int, error_type: str | None,
                        message: str | None, latency: float, overhead: float
                        ) -> RequestFinished:
        return RequestFinished(ctx, status, error_type, message, latency, overhead,
                               cost_of(ctx, self.prices))


async def _purge_every_hour(db: Database, days: float) -> None:
    """Spend-log retention: delete records older than ``days``, now and every hour."""
    while True:
        try:
            before = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
            removed = await db.purge_spend(before)
            if removed:
                log.info("spend log retention", removed=removed, before=before.isoformat())
        except Exception as exc:  # the next hour tries again
            log.warning("spend log retention failed", error=str(exc))
        await asyncio.sleep(3600)

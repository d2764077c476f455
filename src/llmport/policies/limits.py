"""Admission by tenant: model allow-lists, rate limits, concurrency and budgets.

Every level that carries a limit (the key, its user, team and org, the key's
per-model limits, the client IP) contributes store items: a sliding window for
requests per minute, one for tokens per minute (charged with an estimate of the
prompt at admission, corrected by the usage the answer reports), a lease for
concurrent requests, and a ceiling for a budget. All of them are checked and
taken in **one** store call, all or nothing, so limits hold exactly however many
replicas share the store. After the response, one more call settles the request:
token corrections, spend charged to budgets, leases released.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import structlog
from pydantic import BaseModel, ConfigDict, Field

from llmport.accounting.budgets import BudgetBook, period_end
from llmport.accounting.spend import Prices, cost_of, new_record_id
from llmport.errors import (
    BudgetExceededError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from llmport.gateway.context import CallContext
from llmport.gateway.pipeline import Handler
from llmport.observability.events import BudgetAlert, EventBus
from llmport.policies.estimate import estimate_tokens
from llmport.policies.rate_headers import duration, rate_headers
from llmport.stores.base import (
    Admission,
    CounterCeiling,
    LeaseLimit,
    StateStore,
    WindowLimit,
)
from llmport.types import Chunk, JSONResult, Principal, Quota, Result, StreamResult

log = structlog.get_logger("llmport.limits")
NO_CEILING = 1e18  # a soft-only budget reads its counter without a hard limit
MAX_KNOWN_LEVELS = 10_000  # (principal, model, IP) combinations kept; past it, start over
MINUTE = 60  # the windows of rpm and tpm limits, in seconds


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ip_rpm_limit: int | None = Field(default=None, ge=1, description="requests/min per client IP")
    ip_tpm_limit: int | None = Field(default=None, ge=1, description="tokens/min per client IP")
    ip_max_parallel_requests: int | None = Field(default=None, ge=1)
    lease_ttl: float = Field(default=900.0, gt=0, description=(
        "seconds after which a concurrency slot held by a crashed replica is freed"))


@dataclass(slots=True, eq=False)
class _Levels:
    """The limits of one principal on one model, as far as they are the same for every
    request: the levels with a limit, and the store items they make (their keys, the
    requests-per-minute windows, which take one request every time, and the kind of
    each window). Made at a principal's first request for a model and kept, as
    principals are; the limit objects are shared, which is safe as no store changes them.
    """

    # Per window, in the order taken: a fixed rpm window, or a tpm window's key and limit
    # (its amount is each request's estimate).
    windows: tuple[WindowLimit | tuple[str, float], ...]
    kinds: tuple[tuple[str, Quota], ...]  # per window: ("requests" | "tokens", its level)
    tokens: tuple[str, ...]  # the tpm windows' keys, which settlement corrects
    leases: tuple[tuple[str, int], ...]  # key and limit
    lease_quotas: tuple[Quota, ...]
    budgeted: tuple[Quota, ...]
    # The budgets' counters (``BudgetBook.counters``) and their ceilings, kept until the
    # day changes (a period may begin), the book forgets its counters (a budget reset) or
    # a counter is due for its existence check.
    budgets: list[tuple[Quota, str]] = field(default_factory=list)
    ceilings: list[CounterCeiling] = field(default_factory=list)
    budgets_day: int = -1
    budgets_generation: int = -1
    budgets_until: float = 0.0


def _levels_of(quotas: tuple[Quota, ...]) -> _Levels:
    windows: list[WindowLimit | tuple[str, float]] = []
    kinds: list[tuple[str, Quota]] = []
    for quota in quotas:
        if quota.rpm:
            windows.append(WindowLimit(f"rl:{quota.scope}:rpm", quota.rpm, 1, MINUTE))
            kinds.append(("requests", quota))
        if quota.tpm:
            windows.append((f"rl:{quota.scope}:tpm", quota.tpm))
            kinds.append(("tokens", quota))
    return _Levels(
        tuple(windows), tuple(kinds),
        tuple(w[0] for w in windows if isinstance(w, tuple)),
        tuple((f"cc:{q.scope}", q.parallel) for q in quotas if q.parallel),
        tuple(q for q in quotas if q.parallel),
        tuple(q for q in quotas if q.max_budget is not None or q.soft_budget is not None))


@dataclass(slots=True)
class _Plan:
    """What one request took at admission, to settle afterwards."""

    levels: _Levels
    estimate: int
    windows: list[WindowLimit]
    leases: list[LeaseLimit]
    lease_id: str
    budgets: list[tuple[Quota, str]]
    spent_before: list[float] = field(default_factory=list)
    settled: bool = False

    @property
    def kinds(self) -> tuple[tuple[str, Quota], ...]:
        return self.levels.kinds

    @property
    def lease_quotas(self) -> tuple[Quota, ...]:
        return self.levels.lease_quotas


class LimitsPolicy:
    def __init__(self, config: LimitsConfig, store: StateStore, budgets: BudgetBook,
                 prices: Prices, events: EventBus,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock  # epoch seconds
        self.store = store
        self.budgets = budgets
        self.prices = prices
        self.events = events
        self._ip_limited = any(v is not None for v in (
            config.ip_rpm_limit, config.ip_tpm_limit, config.ip_max_parallel_requests))
        # By the identity of a principal's quotas (shared by its copies), the model and, when
        # client IPs are limited, the IP. An entry holds the objects it was made from, so
        # their ids cannot be reused while it is kept.
        self._known: dict[tuple[int, int, str, str | None], tuple[Principal, _Levels]] = {}

    async def __call__(self, ctx: CallContext, call_next: Handler) -> Result:
        principal = ctx.principal
        allowed = principal.allowed_models
        if allowed is not None and ctx.model not in allowed:
            raise PermissionDeniedError(
                f"This API key is not allowed to use the model `{ctx.model}`.",
                param="model", code="model_not_allowed")
        levels = self._levels(ctx)
        if levels is None:
            return await call_next(ctx)
        plan = await self._admit(ctx, levels)
        ctx.cleanups.append(lambda: self._settle(ctx, plan))  # failures and hang-ups
        result = await call_next(ctx)
        # Settled before the client has the whole answer, so its next request (to any
        # replica) is admitted against the corrected counts.
        if isinstance(result, JSONResult):
            await self._settle(ctx, plan)
            return result
        return StreamResult(self._settle_after(ctx, plan, result.chunks), close=result.close)

    async def _settle_after(self, ctx: CallContext, plan: _Plan,
                            chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        await self._settle(ctx, plan)

    def _levels(self, ctx: CallContext) -> _Levels | None:
        """This request's levels (None: nothing limits it), made once per principal and model."""
        principal = ctx.principal
        ip = ctx.client_ip if self._ip_limited else None
        key = (id(principal.quotas), id(principal.model_quotas), ctx.model, ip)
        known = self._known.get(key)
        if known is not None:
            holder = known[0]
            if holder.quotas is principal.quotas and holder.model_quotas is principal.model_quotas:
                return known[1]
        quotas = self._quotas(ctx)
        levels = _levels_of(tuple(quotas)) if quotas else None
        if levels is not None:
            if len(self._known) >= MAX_KNOWN_LEVELS:
                self._known.clear()
            self._known[key] = (principal, levels)
        return levels

    def _quotas(self, ctx: CallContext) -> list[Quota]:
        principal = ctx.principal
        quotas = list(principal.quotas)
        for model, quota in principal.model_quotas:
            if model == ctx.model:
                quotas.append(quota)
        if self._ip_limited and ctx.client_ip:
            config = self.config
            quotas.append(Quota(scope=f"ip:{ctx.client_ip}", column="", entity_id="",
                                rpm=config.ip_rpm_limit, tpm=config.ip_tpm_limit,
                                parallel=config.ip_max_parallel_requests))
        return quotas

    async def _admit(self, ctx: CallContext, levels: _Levels) -> _Plan:
        now = self._clock()
        estimate = estimate_tokens(ctx.body) if levels.tokens else 0
        windows = [WindowLimit(w[0], w[1], estimate, MINUTE) if isinstance(w, tuple) else w
                   for w in levels.windows]
        if levels.leases:
            lease_id, ttl = new_record_id(), self.config.lease_ttl
            leases = [LeaseLimit(key, limit, lease_id, ttl) for key, limit in levels.leases]
        else:
            lease_id, leases = "", []
        if levels.budgeted:
            await self._budget_counters(levels, now)
        ceilings = levels.ceilings
        plan = _Plan(levels, estimate, windows, leases, lease_id, levels.budgets)
        try:
            admission = await self.store.admit(windows, leases, ceilings, now=now)
        except Exception as exc:  # fail closed: limits that cannot be checked are not waived
            log.error("the state store failed", error=f"{type(exc).__name__}: {exc}",
                      request_id=ctx.request_id)
            raise ServiceUnavailableError("Rate limits cannot be checked right now (the state "
                                          "store is unreachable).", code="state_store_unavailable",
                                          headers={"retry-after": "1"}) from None
        if not admission.admitted:
            raise self._refusal(plan, admission, now)
        plan.spent_before = [state.used for state in admission.ceilings]
        ctx.response_headers += rate_headers(plan.kinds, admission.windows)
        return plan

    def _refusal(self, plan: _Plan, admission: Admission,
                 now: float) -> RateLimitError | BudgetExceededError:
        refused = admission.refused_by
        headers = dict((k.decode(), v.decode())
                       for k, v in rate_headers(plan.kinds, admission.windows))
        for (kind, quota), state in zip(plan.kinds, admission.windows, strict=True):
            if state.key == refused:
                if kind == "tokens" and plan.estimate > state.limit:
                    message = (f"Request too large for {_level(quota)}: about {plan.estimate} "
                               f"tokens, over its limit of {state.limit:g} tokens per minute.")
                else:
                    message = (f"Rate limit reached for {_level(quota)}: {state.limit:g} {kind} "
                               f"per minute, {state.used:g} used. "
                               f"Try again in {admission.retry_after_s:.3g}s.")
                return RateLimitError(message, retry_after=admission.retry_after_s,
                                      headers={**headers, "retry-after-ms":
                                               str(math.ceil(admission.retry_after_s * 1000))})
        for quota, state in zip(plan.lease_quotas, admission.leases, strict=True):
            if state.key == refused:
                return RateLimitError(
                    f"Too many concurrent requests for {_level(quota)}: the limit is "
                    f"{state.limit:g} at once.", retry_after=1.0,
                    code="concurrency_limit_exceeded", headers=headers)
        for (quota, _), state in zip(plan.budgets, admission.ceilings, strict=True):
            if state.key == refused:
                end = period_end(quota.budget_period, now)
                until = "" if end is None else f" It renews in {duration(end - now)}."
                return BudgetExceededError(
                    f"Budget exceeded for {_level(quota)}: ${state.used:.6g} spent of "
                    f"${state.limit:.6g} ({quota.budget_period}).{until}",
                    headers={} if end is None else {"retry-after": str(math.ceil(end - now))})
        return RateLimitError("Rate limit reached.", retry_after=admission.retry_after_s)

    async def _budget_counters(self, levels: _Levels, now: float) -> None:
        """Brings the levels' budget counters and ceilings up to date, when they may have
        changed (a counter's key names its period's start, which moves at most daily)."""
        book = self.budgets
        day = int(now // 86_400)
        if (day == levels.budgets_day and book.generation == levels.budgets_generation
                and now < levels.budgets_until):
            return
        generation = book.generation
        budgets = await book.counters(levels.budgeted, now)
        keys = [key for _, key in budgets]
        if [c.key for c in levels.ceilings] != keys:
            levels.ceilings = [
                CounterCeiling(key, NO_CEILING if q.max_budget is None else q.max_budget)
                for q, key in budgets]
        levels.budgets = budgets
        levels.budgets_day, levels.budgets_generation = day, generation
        levels.budgets_until = book.next_check(keys)

    async def _settle(self, ctx: CallContext, plan: _Plan) -> None:
        if plan.settled:
            return
        plan.settled = True
        usage = ctx.usage
        tokens = usage.total_tokens if usage is not None else 0
        if ctx.state.get("replayed"):
            tokens = 0
        levels = plan.levels
        delta = float(tokens - plan.estimate)
        windows = [(key, delta, MINUTE) for key in levels.tokens] if delta else []
        cost = cost_of(ctx, self.prices)
        counters = [(key, cost) for _, key in plan.budgets] if cost > 0 else []
        lease_id = plan.lease_id
        releases = [(key, lease_id) for key, _ in levels.leases]
        if windows or counters or releases:
            await self.store.settle(windows, counters, releases)
        if cost > 0:  # alerts: _alert is called only for a threshold this request crossed
            for quota, before in zip(levels.budgeted, plan.spent_before, strict=True):
                after = before + cost
                soft, hard = quota.soft_budget, quota.max_budget
                if (soft is not None and before < soft <= after) or (
                        hard is not None and before < hard <= after):
                    self._alert(ctx, quota, before, cost)

    def _alert(self, ctx: CallContext, quota: Quota, before: float, cost: float) -> None:
        for limit, kind in ((quota.soft_budget, "soft"), (quota.max_budget, "hard")):
            if limit is not None and before < limit <= before + cost:
                log.warning("budget threshold crossed", level=quota.scope, budget=kind,
                            limit=limit, spent=round(before + cost, 6),
                            request_id=ctx.request_id)
                if self.events.wants(BudgetAlert):
                    self.events.emit(BudgetAlert(quota.scope, kind, limit, before + cost,
                                                 ctx.request_id))


def _level(quota: Quota) -> str:
    kind, _, name = quota.scope.partition(":")
    labels = {"key": "this API key", "user": "user", "team": "team", "org": "organization",
              "ip": "client IP", "jwt": "this token"}
    if ":model:" in quota.scope:
        return f"this API key on model `{quota.scope.split(':model:', 1)[1]}`"
    label = labels.get(kind, kind)
    return label if kind in ("key", "jwt") else f"{label} {name}"

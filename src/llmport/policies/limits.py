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
from collections.abc import AsyncIterator
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
from llmport.stores.base import (
    Admission,
    CounterCeiling,
    ItemState,
    LeaseLimit,
    StateStore,
    WindowLimit,
)
from llmport.types import Chunk, JSONResult, Quota, Result, StreamResult

log = structlog.get_logger("llmport.limits")
NO_CEILING = 1e18  # a soft-only budget reads its counter without a hard limit


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ip_rpm_limit: int | None = Field(default=None, ge=1, description="requests/min per client IP")
    ip_tpm_limit: int | None = Field(default=None, ge=1, description="tokens/min per client IP")
    ip_max_parallel_requests: int | None = Field(default=None, ge=1)
    lease_ttl: float = Field(default=900.0, gt=0, description=(
        "seconds after which a concurrency slot held by a crashed replica is freed"))


@dataclass(slots=True)
class _Plan:
    """What one request took at admission, to settle afterwards."""

    estimate: int
    windows: list[WindowLimit] = field(default_factory=list)
    kinds: list[tuple[str, Quota]] = field(default_factory=list)  # per window: rpm | tpm
    leases: list[LeaseLimit] = field(default_factory=list)
    lease_quotas: list[Quota] = field(default_factory=list)
    budgets: list[tuple[Quota, str]] = field(default_factory=list)
    spent_before: list[float] = field(default_factory=list)
    settled: bool = False


class LimitsPolicy:
    def __init__(self, config: LimitsConfig, store: StateStore, budgets: BudgetBook,
                 prices: Prices, events: EventBus) -> None:
        self.config = config
        self.store = store
        self.budgets = budgets
        self.prices = prices
        self.events = events
        self._ip_limited = any(v is not None for v in (
            config.ip_rpm_limit, config.ip_tpm_limit, config.ip_max_parallel_requests))

    async def __call__(self, ctx: CallContext, call_next: Handler) -> Result:
        principal = ctx.principal
        allowed = principal.allowed_models
        if allowed is not None and ctx.model not in allowed:
            raise PermissionDeniedError(
                f"This API key is not allowed to use the model `{ctx.model}`.",
                param="model", code="model_not_allowed")
        quotas = self._quotas(ctx)
        if not quotas:
            return await call_next(ctx)
        plan = await self._admit(ctx, quotas)
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

    async def _admit(self, ctx: CallContext, quotas: list[Quota]) -> _Plan:
        now = time.time()
        plan = _Plan(estimate=estimate_tokens(ctx.body) if any(q.tpm for q in quotas) else 0)
        lease_id = new_record_id()
        for quota in quotas:
            if quota.rpm:
                plan.windows.append(WindowLimit(f"rl:{quota.scope}:rpm", quota.rpm, 1))
                plan.kinds.append(("requests", quota))
            if quota.tpm:
                plan.windows.append(WindowLimit(f"rl:{quota.scope}:tpm", quota.tpm,
                                                plan.estimate))
                plan.kinds.append(("tokens", quota))
            if quota.parallel:
                plan.leases.append(LeaseLimit(f"cc:{quota.scope}", quota.parallel, lease_id,
                                              self.config.lease_ttl))
                plan.lease_quotas.append(quota)
        plan.budgets = await self.budgets.counters(quotas, now)
        ceilings = [CounterCeiling(key, NO_CEILING if q.max_budget is None else q.max_budget)
                    for q, key in plan.budgets]
        try:
            admission = await self.store.admit(plan.windows, plan.leases, ceilings, now=now)
        except Exception as exc:  # fail closed: limits that cannot be checked are not waived
            log.error("the state store failed", error=f"{type(exc).__name__}: {exc}",
                      request_id=ctx.request_id)
            raise ServiceUnavailableError("Rate limits cannot be checked right now (the state "
                                          "store is unreachable).", code="state_store_unavailable",
                                          headers={"retry-after": "1"}) from None
        if not admission.admitted:
            raise self._refusal(plan, admission, now)
        plan.spent_before = [state.used for state in admission.ceilings]
        ctx.response_headers += _rate_headers(plan, admission)
        return plan

    def _refusal(self, plan: _Plan, admission: Admission,
                 now: float) -> RateLimitError | BudgetExceededError:
        refused = admission.refused_by
        headers = dict((k.decode(), v.decode()) for k, v in _rate_headers(plan, admission))
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
                until = "" if end is None else f" It renews in {_duration(end - now)}."
                return BudgetExceededError(
                    f"Budget exceeded for {_level(quota)}: ${state.used:.6g} spent of "
                    f"${state.limit:.6g} ({quota.budget_period}).{until}",
                    headers={} if end is None else {"retry-after": str(math.ceil(end - now))})
        return RateLimitError("Rate limit reached.", retry_after=admission.retry_after_s)

    async def _settle(self, ctx: CallContext, plan: _Plan) -> None:
        if plan.settled:
            return
        plan.settled = True
        usage = ctx.usage
        tokens = usage.total_tokens if usage is not None else 0
        if ctx.state.get("replayed"):
            tokens = 0
        windows = [(w.key, float(tokens - plan.estimate), w.window_s)
                   for w, (kind, _) in zip(plan.windows, plan.kinds, strict=True)
                   if kind == "tokens" and tokens != plan.estimate]
        cost = cost_of(ctx, self.prices)
        counters = [(key, cost) for _, key in plan.budgets] if cost > 0 else []
        releases = [(lease.key, lease.lease_id) for lease in plan.leases]
        if windows or counters or releases:
            await self.store.settle(windows, counters, releases)
        if cost > 0:
            for (quota, _), before in zip(plan.budgets, plan.spent_before, strict=True):
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


_REQUESTS_HEADERS = (b"x-ratelimit-limit-requests", b"x-ratelimit-remaining-requests",
                     b"x-ratelimit-reset-requests")
_TOKENS_HEADERS = (b"x-ratelimit-limit-tokens", b"x-ratelimit-remaining-tokens",
                   b"x-ratelimit-reset-tokens")


def _rate_headers(plan: _Plan, admission: Admission) -> list[tuple[bytes, bytes]]:
    """OpenAI's ``x-ratelimit-*`` headers, for the tightest request and token windows."""
    requests: ItemState | None = None
    tokens: ItemState | None = None
    for (kind, _), state in zip(plan.kinds, admission.windows, strict=True):
        if kind == "requests":
            if requests is None or state.limit - state.used < requests.limit - requests.used:
                requests = state
        elif tokens is None or state.limit - state.used < tokens.limit - tokens.used:
            tokens = state
    headers: list[tuple[bytes, bytes]] = []
    for names, tight in ((_REQUESTS_HEADERS, requests), (_TOKENS_HEADERS, tokens)):
        if tight is not None:
            left = tight.limit - tight.used
            headers += ((names[0], _count_text(tight.limit)),
                        (names[1], b"%d" % left if left > 0 else b"0"),
                        (names[2], _reset_text(tight.reset_s)))
    return headers


# Every request sends these headers, and formatting their numbers was a third of their
# cost: the limits (a few per deployment) and the resets of minute windows (rounded to
# the hundredth of a second, at most 6,000 of them) are formatted once and kept.
_COUNTS: dict[float, bytes] = {}
_RESETS: dict[int, bytes] = {}
_KEPT_COUNTS = 1024


def _count_text(limit: float) -> bytes:
    text = _COUNTS.get(limit)
    if text is None:
        if len(_COUNTS) >= _KEPT_COUNTS:
            _COUNTS.clear()
        text = _COUNTS[limit] = b"%d" % limit
    return text


def _reset_text(seconds: float) -> bytes:
    """``_duration`` as header bytes, to the hundredth of a second."""
    if seconds >= 60:
        return _duration(seconds).encode()
    hundredths = round(seconds * 100) if seconds > 0 else 0
    text = _RESETS.get(hundredths)
    if text is None:
        text = _RESETS[hundredths] = _duration(hundredths / 100).encode()
    return text


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{rest}s"


def _level(quota: Quota) -> str:
    kind, _, name = quota.scope.partition(":")
    labels = {"key": "this API key", "user": "user", "team": "team", "org": "organization",
              "ip": "client IP", "jwt": "this token"}
    if ":model:" in quota.scope:
        return f"this API key on model `{quota.scope.split(':model:', 1)[1]}`"
    label = labels.get(kind, kind)
    return label if kind in ("key", "jwt") else f"{label} {name}"

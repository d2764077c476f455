"""Spend: what a request cost, and the one spend record every request leaves behind.

``Prices`` answers "what does this deployment charge" once per deployment (config
override, else the built-in table). ``cost_of`` prices a finished call from the usage
it reported; the limits policy charges budgets with it and the ``SpendRecorder``
writes it to the journal, so both see the same number. The recorder is an event
subscriber: the request path only appends one line to a local file.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from llmport.accounting.pricing import Price, cost, price_for
from llmport.observability.events import RequestFinished

if TYPE_CHECKING:
    from llmport.accounting.journal import SpendJournal
    from llmport.config import ModelConfig
    from llmport.gateway.context import CallContext


class SpendLogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    journal_dir: str | None = Field(default=None, description=(
        "where records wait for the database (default: <data_dir>/journal)"))
    flush_interval: float = Field(default=0.5, gt=0, description="seconds between flushes")
    batch_size: int = Field(default=1000, ge=1)
    retention_days: float | None = Field(default=None, gt=0, description=(
        "delete records older than this (checked hourly); unset keeps everything"))


_UNKNOWN: Any = object()  # a deployment this book has no entry for (None is "free")


class Prices:
    """Deployment name → its price (None: free or unknown), resolved once at start-up."""

    def __init__(self, deployments: Iterable[tuple[str, ModelConfig]]) -> None:
        self._by_deployment: dict[str, Price | None] = {}
        self._by_model: dict[str, Price | None] = {}
        for name, model in deployments:
            pricing = model.pricing
            override = None if pricing is None else Price(
                pricing.input, pricing.output, pricing.cached_input)
            price = price_for(model.upstream_model, override)
            self._by_deployment[name] = price
            self._by_model.setdefault(model.name, price)

    def for_call(self, deployment: str | None, model: str | None) -> Price | None:
        price = self._by_deployment.get(deployment, _UNKNOWN)  # type: ignore[arg-type]
        return self._by_model.get(model or "") if price is _UNKNOWN else price


_ID_PREFIX = secrets.token_hex(8)  # per process: with a counter, unique without uuid4's cost
_ids = itertools.count()


_prefix = ""


def _new_process() -> None:
    global _prefix
    _prefix = f"{_ID_PREFIX}{os.getpid():x}."


_new_process()
os.register_at_fork(after_in_child=_new_process)  # forked workers: their own pid in the ids


def new_record_id() -> str:
    """A unique id (the spend log's exactly-once key, lease ids): random per process (the pid
    keeps forked workers apart), then a counter."""
    return f"{_prefix}{next(_ids):x}"


def cost_of(ctx: CallContext, prices: Prices) -> float:
    """US$ for this call, from the usage it reported; kept on the context (``ctx.cost``), so
    the limits policy and the spend record charge the same number, computed once."""
    value = ctx.cost
    if value is not None:
        return value
    usage = ctx.usage
    state = ctx.state  # usually empty: its look-ups are skipped then
    if usage is None or (state and (state.get("cache") == "hit" or state.get("replayed"))):
        value = 0.0
    else:
        price = prices.for_call(ctx.deployment, ctx.served_model or ctx.model)
        value = cost(price, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    ctx.cost = value
    return value


class SpendRecorder:
    """Turns each finished request into one journal line."""

    handles = (RequestFinished,)

    def __init__(self, journal: SpendJournal) -> None:
        self.journal = journal

    def __call__(self, event: RequestFinished) -> None:
        self.journal.append(record_of(event))


def record_of(event: RequestFinished) -> dict[str, Any]:
    ctx = event.ctx  # read directly: the event's properties cost a call each
    principal = ctx.principal
    usage = ctx.usage
    ttft = ctx.ttft_s
    return {
        "id": new_record_id(),
        "request_id": ctx.request_id,
        "created_at": time.time(),
        "key_id": principal.key_id,
        "user_id": principal.user_id,
        "team_id": principal.team_id,
        "org_id": principal.org_id,
        "principal_kind": principal.kind,
        "endpoint": ctx.endpoint,  # a str enum (its .value costs a descriptor call)
        "model": ctx.model,
        "served_model": ctx.served_model,
        "deployment": ctx.deployment,
        "stream": ctx.stream,
        "status": event.status,
        "error_type": event.error_type,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "cost": event.cost,
        "latency_ms": round(event.latency_s * 1000, 3),
        "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
        "cache_hit": ctx.state.get("cache") == "hit",
        "attempts": ctx.attempts,
    }

"""The limits policy keeps each principal's budget counters between requests: it must still
move to a new period's counter, and still re-seed a counter the store lost, on time."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from llmport.accounting.budgets import RECHECK_SECONDS, BudgetBook, counter_key
from llmport.accounting.spend import Prices
from llmport.config import ModelConfig
from llmport.db.database import Database
from llmport.gateway.context import CallContext
from llmport.observability.events import EventBus
from llmport.policies.limits import LimitsConfig, LimitsPolicy
from llmport.stores.memory import MemoryStore
from llmport.types import Endpoint, JSONResult, Principal, Quota, Usage

MODEL = "m"
# $1 per million input and output tokens: a request of 1,000 tokens costs $0.001.
PRICED = ModelConfig(name=MODEL, provider="openai", api_base="http://127.0.0.1:9/v1",
                     pricing={"input": 1.0, "output": 1.0})
DAY = 86_400.0
NOON = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC).timestamp()
SPENT = {"id": "earlier", "request_id": "r0", "created_at": NOON - 3600, "key_id": "key_1",
         "principal_kind": "key", "endpoint": "chat", "model": MODEL, "stream": False,
         "status": 200, "cost": 0.25, "latency_ms": 1.0, "cache_hit": False, "attempts": 1}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy(db: Database, clock: Clock) -> tuple[LimitsPolicy, MemoryStore]:
    store = MemoryStore()
    limits = LimitsPolicy(LimitsConfig(), store, BudgetBook(store, db),
                          Prices([(MODEL, PRICED)]), EventBus(), clock=clock)
    return limits, store


def principal(period: str) -> Principal:
    quota = Quota(scope="key:key_1", column="key_id", entity_id="key_1", rpm=1000,
                  max_budget=5.0, budget_period=period)
    return Principal(id="key_1", key_id="key_1", quotas=(quota,))


async def request(limits: LimitsPolicy, who: Principal, tokens: int = 1000) -> None:
    ctx = CallContext(request_id="r", endpoint=Endpoint.CHAT, raw_body=None, model=MODEL,
                      body={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    ctx.principal = who

    async def answer(ctx: CallContext) -> Any:
        ctx.usage = Usage(tokens // 2, tokens - tokens // 2)
        ctx.deployment = ctx.served_model = MODEL
        return JSONResult({"choices": []})

    await limits(ctx, answer)


async def test_a_new_day_charges_the_new_periods_counter_at_once(db: Database) -> None:
    midnight = NOON + DAY / 2
    clock = Clock(midnight - 10)
    limits, store = policy(db, clock)
    who = principal("daily")
    quota = who.quotas[0]
    await request(limits, who)
    await request(limits, who)
    today = counter_key(quota, midnight - 10)
    assert await store.get_counter(today) == pytest.approx(0.002)
    # Twenty seconds later, well within the counters' recheck time, but a new day: the
    # same principal's kept levels must charge the new period's counter.
    clock.now = midnight + 10
    await request(limits, who)
    tomorrow = counter_key(quota, midnight + 10)
    assert tomorrow != today
    assert await store.get_counter(tomorrow) == pytest.approx(0.001)
    assert await store.get_counter(today) == pytest.approx(0.002)


async def test_a_lost_counter_is_seeded_again_from_the_spend_log_within_the_recheck(
        db: Database) -> None:
    clock = Clock(NOON)
    limits, store = policy(db, clock)
    who = principal("monthly")
    key = counter_key(who.quotas[0], NOON)
    await db.insert_spend([SPENT])
    await request(limits, who)
    assert await store.get_counter(key) == pytest.approx(0.251)  # seeded, then charged
    await store.delete(key)  # the store lost it (a Redis restart, say)
    clock.now = NOON + RECHECK_SECONDS / 2
    await request(limits, who)
    assert await store.get_counter(key) == pytest.approx(0.001)  # not checked yet
    await store.delete(key)
    clock.now = NOON + RECHECK_SECONDS + 1
    await request(limits, who)
    # Checked again: seeded from the spend log (the journal is not part of this test, so
    # only the earlier row is there), then charged.
    assert await store.get_counter(key) == pytest.approx(0.251)


async def test_a_forgotten_book_seeds_the_counter_again_at_once(db: Database) -> None:
    clock = Clock(NOON)
    limits, store = policy(db, clock)
    who = principal("total")
    key = counter_key(who.quotas[0], NOON)
    await request(limits, who)
    await db.insert_spend([SPENT])
    await store.delete(key)
    limits.budgets.forget()  # as a budget reset does
    clock.now = NOON + 1  # within the recheck time: only forgetting makes it seed again
    await request(limits, who)
    assert await store.get_counter(key) == pytest.approx(0.251)


class CountingDatabase(Database):
    """The real database, counting how often a budget's spend is summed."""

    sums = 0

    async def spend_total(self, *args: Any, **kwargs: Any) -> float:
        self.sums += 1
        return await super().spend_total(*args, **kwargs)


async def test_requests_arriving_together_seed_a_counter_once(tmp_path: Path) -> None:
    database = CountingDatabase(f"sqlite+aiosqlite:///{tmp_path / 'spend.db'}")
    await database.upgrade()
    try:
        await database.insert_spend([SPENT])
        store = MemoryStore()
        book = BudgetBook(store, database)
        quota = principal("monthly").quotas[0]
        answers = await asyncio.gather(*(book.counters([quota], NOON) for _ in range(20)))
        key = counter_key(quota, NOON)
        assert all(answer == [(quota, key)] for answer in answers)
        assert database.sums == 1  # one sum of the spend log, not one per request
        assert await store.get_counter(key) == pytest.approx(0.25)
    finally:
        await database.aclose()

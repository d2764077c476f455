"""Budget periods and their counters.

A budget's spend lives in a store counter named after its tenant level and the
moment its current period began (``budget:key:key_3f…:1764547200``): a new day,
week or month, or a reset from the admin API, simply starts a new counter. The
first time a process meets a counter that does not exist yet, it is seeded from
the spend log, so a restart or a fresh Redis does not forget earlier spend (each
process checks again once a minute that its counters still exist).
"""

from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

from llmport.types import Quota

if TYPE_CHECKING:
    from llmport.db.database import Database
    from llmport.stores.base import StateStore

MAX_REMEMBERED = 100_000
RECHECK_SECONDS = 60.0  # a counter lost with its Redis is re-seeded within this time


def period_start(period: str, now: float) -> float | None:
    """Epoch seconds at which the budget period containing ``now`` began (UTC); None: total."""
    if period == "total":
        return None
    return _period_start(period, int(now // 86_400))


@functools.lru_cache(maxsize=64)
def _period_start(period: str, day_number: int) -> float:
    """Per UTC day: the hot path asks this for every budgeted request."""
    day = dt.datetime.fromtimestamp(day_number * 86_400, dt.UTC)
    if period == "weekly":
        day -= dt.timedelta(days=day.weekday())
    elif period == "monthly":
        day = day.replace(day=1)
    return day.timestamp()


def budget_since(quota: Quota, now: float) -> float | None:
    """Spend since this moment counts toward the budget: the period's start or the last reset."""
    start = period_start(quota.budget_period, now)
    reset = quota.budget_reset_at
    if start is None:
        return reset
    return start if reset is None else max(start, reset)


def counter_key(quota: Quota, now: float) -> str:
    since = budget_since(quota, now)
    return f"budget:{quota.scope}:{0 if since is None else int(since)}"


def period_end(period: str, now: float) -> float | None:
    """When the current period ends (for counter expiry and messages); None: never."""
    start = period_start(period, now)
    if start is None:
        return None
    begin = dt.datetime.fromtimestamp(start, dt.UTC)
    if period == "daily":
        return start + 86_400
    if period == "weekly":
        return start + 7 * 86_400
    days = calendar.monthrange(begin.year, begin.month)[1]
    return start + days * 86_400


class BudgetBook:
    """Finds (and, once per process, seeds) the counter of each budgeted level."""

    def __init__(self, store: StateStore, db: Database | None) -> None:
        self.store = store
        self.db = db
        self._seeded: dict[str, float] = {}  # counter key → when to check it exists again
        self.generation = 0  # changes with forget(): counters kept by callers are stale then
        self._seeding: dict[str, asyncio.Future[None]] = {}

    async def counters(self, quotas: Sequence[Quota], now: float) -> list[tuple[Quota, str]]:
        out = []
        for quota in quotas:
            if quota.max_budget is None and quota.soft_budget is None:
                continue
            key = counter_key(quota, now)
            if self._seeded.get(key, 0.0) < now:
                await self._seed_once(quota, key, now)
            out.append((quota, key))
        return out

    async def _seed_once(self, quota: Quota, key: str, now: float) -> None:
        """``_seed``, once for all the requests that need the same counter at the same time:
        a process starting under load would otherwise ask the store, and sum the spend log,
        once per request in flight."""
        pending = self._seeding.get(key)
        if pending is None:
            pending = self._seeding[key] = asyncio.ensure_future(self._seed(quota, key, now))
            pending.add_done_callback(lambda _: self._seeding.pop(key, None))
        await asyncio.shield(pending)  # one request giving up does not cancel it for the rest

    async def _seed(self, quota: Quota, key: str, now: float) -> None:
        if await self.store.get_counter(key) is None:
            since = budget_since(quota, now)
            spent = 0.0
            if self.db is not None:
                start = None if since is None else dt.datetime.fromtimestamp(since, dt.UTC)
                spent = await self.db.spend_total(quota.column, quota.entity_id,  # type: ignore[arg-type]
                                                  start)
            end = period_end(quota.budget_period, now)
            ttl = None if end is None else end - now + 86_400
            await self.store.set_counter(key, spent, ttl_s=ttl, only_if_absent=True)
        if len(self._seeded) >= MAX_REMEMBERED:
            self._seeded.clear()
        self._seeded[key] = now + RECHECK_SECONDS

    def next_check(self, keys: Sequence[str]) -> float:
        """When ``counters`` would next have work to do for these keys (seed or check one):
        until then, a caller may keep the keys it returned for the same quotas and day."""
        seeded = self._seeded
        return min((seeded.get(key, 0.0) for key in keys), default=0.0)

    def forget(self) -> None:
        """Seed again on next use (after a budget reset)."""
        self._seeded.clear()
        self.generation += 1

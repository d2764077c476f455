"""Usage reports: the spend log aggregated by tenant, model and UTC day.

``usage_query`` builds one ``GROUP BY`` statement that runs unchanged on SQLite and
PostgreSQL; only the day bucket differs, and ``utc_day`` compiles it per dialect
(SQLite stores naive UTC text, PostgreSQL an aware ``timestamptz``).

Filters: ``start`` is inclusive and ``end`` exclusive. ``model`` matches the model
that served the request when the log knows it (``served_model``), else the model
that was asked for, so a fallback's spend counts for the model that ran.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, SQLColumnExpression, String, case, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from llmport.db.models import SpendLog

GROUPS: dict[str, ColumnElement[Any]] = {
    name: getattr(SpendLog, name).expression
    for name in ("key_id", "user_id", "team_id", "org_id", "model", "served_model", "deployment")}
METRICS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost", "errors",
           "cache_hits")


class utc_day(FunctionElement[str]):  # lower case: it reads like SQL
    """The UTC calendar date of a timestamp as ``'YYYY-MM-DD'``."""

    type = String()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d', {compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def group_column(name: str) -> ColumnElement[Any]:
    if name == "day":
        return utc_day(SpendLog.created_at).label("day")
    if name not in GROUPS:
        raise ValueError(f"cannot group usage by {name!r}; choose from "
                         f"{', '.join([*GROUPS, 'day'])}")
    return GROUPS[name].label(name)


def spend_filters(*, key_id: str | None = None, user_id: str | None = None,
                  team_id: str | None = None, org_id: str | None = None,
                  model: str | None = None, start: datetime | None = None,
                  end: datetime | None = None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [
        GROUPS[name] == value for name, value in
        (("key_id", key_id), ("user_id", user_id), ("team_id", team_id), ("org_id", org_id))
        if value is not None]
    if model is not None:
        where.append(func.coalesce(SpendLog.served_model, SpendLog.model) == model)
    if start is not None:
        where.append(SpendLog.created_at >= start)
    if end is not None:
        where.append(SpendLog.created_at < end)
    return where


def _total(column: SQLColumnExpression[Any]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(column), 0)


def usage_query(group_by: Sequence[str], where: Sequence[ColumnElement[bool]]) -> Select[Any]:
    """Totals per group, ordered by the group columns (NULLs first on both dialects)."""
    groups = [group_column(name) for name in dict.fromkeys(group_by)]
    metrics = [
        func.count().label("requests"),
        _total(SpendLog.prompt_tokens).label("prompt_tokens"),
        _total(SpendLog.completion_tokens).label("completion_tokens"),
        _total(SpendLog.cached_tokens).label("cached_tokens"),
        _total(SpendLog.cost).label("cost"),
        _total(case((SpendLog.status >= 400, 1), else_=0)).label("errors"),
        _total(case((SpendLog.cache_hit, 1), else_=0)).label("cache_hits"),
    ]
    query = select(*groups, *metrics).where(*where)
    if groups:
        query = query.group_by(*groups).order_by(*(group.asc().nulls_first() for group in groups))
    return query


def usage_row(row: Row[Any]) -> dict[str, Any]:
    values = row._asdict()
    for name in METRICS:
        values[name] = float(values[name]) if name == "cost" else int(values[name])
    return values

"""``/admin/usage`` and ``/admin/spend/logs``: reports over the spend log, JSON or CSV.

Before answering, this replica flushes its journal, so a report includes every
request it has answered; other replicas' last half second may still be on its way.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from llmport.db.database import Database
from llmport.db.models import as_utc
from llmport.errors import InvalidRequestError
from llmport.gateway.gateway import Gateway

MAX_OFFSET = 2**62  # the databases' integers are 64-bit: a larger offset cannot be bound
GROUPS = ("key_id", "user_id", "team_id", "org_id", "model", "served_model", "deployment", "day")
TOTALS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "cost", "errors",
          "cache_hits")


def usage_router(gateway: Gateway, db: Database) -> APIRouter:
    router = APIRouter()

    @router.get("/usage", summary="Requests, tokens and spend, filtered and grouped")
    async def usage(key_id: str | None = None, user_id: str | None = None,
                    team_id: str | None = None, org_id: str | None = None,
                    model: str | None = None,
                    start: Annotated[dt.datetime | None, Query(
                        description="ISO time, inclusive")] = None,
                    end: Annotated[dt.datetime | None, Query(
                        description="ISO time, exclusive")] = None,
                    group_by: str | None = Query(None, description=(
                        "comma-separated: " + ", ".join(GROUPS))),
                    format: Literal["json", "csv"] = "json") -> Any:
        groups = _groups(group_by)
        if gateway.journal is not None:
            await gateway.journal.flush()

        async def report(by: list[str]) -> list[dict[str, Any]]:
            return await db.usage(key_id=key_id, user_id=user_id, team_id=team_id,
                                  org_id=org_id, model=model, start=_utc(start, "start"),
                                  end=_utc(end, "end"), group_by=by)

        totals = (await report([]))[0]
        rows = await report(groups) if groups else []
        if format == "csv":
            return _csv(rows if groups else [totals], [*groups, *TOTALS])
        out: dict[str, Any] = {"object": "usage", **{k: totals[k] for k in TOTALS}}
        if groups:
            out["group_by"] = groups
            out["data"] = rows
        return out

    @router.get("/spend/logs", summary="The spend log's records, newest first")
    async def spend_logs(key_id: str | None = None, start: dt.datetime | None = None,
                         end: dt.datetime | None = None,
                         limit: int = Query(100, ge=1, le=10_000),
                         offset: int = Query(0, ge=0, le=MAX_OFFSET),
                         format: Literal["json", "csv"] = "json") -> Any:
        if gateway.journal is not None:
            await gateway.journal.flush()
        rows = await db.spend_records(key_id=key_id, start=_utc(start, "start"),
                                      end=_utc(end, "end"), limit=limit, offset=offset)
        if format == "csv":
            return _csv(rows, list(rows[0]) if rows else ["id"])
        return {"object": "list", "data": rows}

    return router


def _groups(group_by: str | None) -> list[str]:
    groups = [g.strip() for g in (group_by or "").split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise InvalidRequestError(f"Cannot group by {', '.join(unknown)}; use "
                                  f"{', '.join(GROUPS)}.", param="group_by")
    return groups


def _utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    """``value`` in UTC (no offset: UTC); a time whose UTC date is no date is refused."""
    if value is None:
        return None
    try:
        return as_utc(value)
    except OverflowError:
        raise InvalidRequestError(f"{name}: the time in UTC is outside the years 1 to 9999",
                                  param=name) from None


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                         for k, v in row.items()})
    return Response(buffer.getvalue(), media_type="text/csv")

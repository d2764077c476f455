"""``ResponseTables``: stored ``/v1/responses`` answers and the conversations they continue.

A stored response keeps the object the client received, its own input items (for
``GET …/input_items``) and chat messages: a response that continues another
(``previous_response_id``) only those its turn added, with the id of the one before
(``previous_id``); any other its whole conversation. A conversation of N turns is then
stored once, not N times over (each response holding every turn before it grew the
storage with the square of the turns), and ``history`` reads a whole chain back in one
query. Deleting a response, or purging it, first hands its messages on to the responses
that continue it, so they stay whole.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, exists, literal, select
from sqlalchemy.orm import aliased

from llmport.db.job_models import StoredResponse
from llmport.db.jobs import now

log = structlog.get_logger("llmport.responses")


class ResponseTables:
    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions

    async def save(self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]],
                   messages: list[dict[str, Any]], previous_id: str | None = None,
                   earlier: list[dict[str, Any]] | None = None) -> None:
        """``messages``: the turn's, after ``earlier`` (the conversation before it). A
        response continuing ``previous_id`` (which holds ``earlier``) stores the turn's
        alone; any other, or one whose previous is gone by now (deleted meanwhile), both."""
        async with self.sessions.begin() as session:
            if previous_id is not None and await session.get(StoredResponse, previous_id) is None:
                previous_id = None
            if previous_id is None:
                messages = [*(earlier or ()), *messages]
            session.add(StoredResponse(id=response["id"], owner=owner, created_at=now(),
                                       body=response, input_items=input_items,
                                       history=messages, previous_id=previous_id))

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        async with self.sessions() as session:
            row = await session.get(StoredResponse, response_id)
        return row if row is not None and row.owner == owner else None

    async def history(self, row: StoredResponse) -> list[dict[str, Any]]:
        """Every chat message of ``row``'s conversation, its answer last."""
        if row.previous_id is None:
            return row.history
        link = select(StoredResponse.id, StoredResponse.previous_id,
                      literal(0).label("depth")).where(
            StoredResponse.id == row.id).cte("chain", recursive=True)
        link = link.union_all(select(
            StoredResponse.id, StoredResponse.previous_id, link.c.depth + 1).where(
            StoredResponse.id == link.c.previous_id))
        query = select(StoredResponse.history).join(link, StoredResponse.id == link.c.id) \
            .order_by(link.c.depth.desc())
        async with self.sessions() as session:
            parts = (await session.execute(query)).scalars().all()
        return [message for part in parts for message in part]

    async def delete(self, owner: str, response_id: str) -> bool:
        async with self.sessions.begin() as session:
            row = await session.get(StoredResponse, response_id)
            if row is None or row.owner != owner:
                return False
            await _hand_on(session, row)
            await session.delete(row)
        return True

    async def purge(self, before: datetime) -> int:
        """Delete the responses stored before ``before``; how many."""
        continuation = aliased(StoredResponse)
        async with self.sessions.begin() as session:  # those nothing continues: at once
            result = await session.execute(delete(StoredResponse).where(
                StoredResponse.created_at < before,
                ~exists().where(continuation.previous_id == StoredResponse.id)))
        removed = int(result.rowcount or 0)
        async with self.sessions() as session:
            ids = (await session.execute(
                select(StoredResponse.id).where(StoredResponse.created_at < before)
                .order_by(StoredResponse.created_at))).scalars().all()
        for response_id in ids:  # one at a time: each hands its messages on first
            async with self.sessions.begin() as session:
                row = await session.get(StoredResponse, response_id)
                if row is not None:
                    await _hand_on(session, row)
                    await session.delete(row)
                    removed += 1
        return removed


async def _hand_on(session: Any, row: StoredResponse) -> None:
    """Before ``row`` goes: the responses continuing it take its messages, and continue the
    one it continued (a response continued by several hands its messages to each)."""
    children = (await session.execute(select(StoredResponse).where(
        StoredResponse.previous_id == row.id))).scalars().all()
    for child in children:
        child.history = [*row.history, *child.history]
        child.previous_id = row.previous_id


async def purge_every_hour(tables: ResponseTables, days: float) -> None:
    """Stored responses' retention: those older than ``days`` deleted, now and hourly (a
    ``previous_response_id`` naming one is then not found, as with OpenAI's 30 days)."""
    while True:
        try:
            removed = await tables.purge(now() - timedelta(days=days))
            if removed:
                log.info("stored responses retention", removed=removed)
        except Exception as exc:  # the next hour tries again
            log.warning("stored responses retention failed", error=str(exc))
        await asyncio.sleep(3600)

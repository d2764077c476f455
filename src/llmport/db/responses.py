"""``ResponseTables``: stored ``/v1/responses`` answers and the conversations they continue.

A stored response keeps the object the client received, its own input items (for
``GET …/input_items``) and the chat messages of its whole conversation up to and with its
answer (``history``), so ``previous_response_id`` continues it with one read.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete

from llmport.db.job_models import StoredResponse
from llmport.db.jobs import now

log = structlog.get_logger("llmport.responses")


class ResponseTables:
    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions

    async def save(self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]],
                   history: list[dict[str, Any]]) -> None:
        async with self.sessions.begin() as session:
            session.add(StoredResponse(id=response["id"], owner=owner, created_at=now(),
                                       body=response, input_items=input_items,
                                       history=history))

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        async with self.sessions() as session:
            row = await session.get(StoredResponse, response_id)
        return row if row is not None and row.owner == owner else None

    async def delete(self, owner: str, response_id: str) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(delete(StoredResponse).where(
                StoredResponse.id == response_id, StoredResponse.owner == owner))
        return bool(result.rowcount)

    async def purge(self, before: datetime) -> int:
        """Delete the responses stored before ``before``; how many."""
        async with self.sessions.begin() as session:
            result = await session.execute(delete(StoredResponse).where(
                StoredResponse.created_at < before))
        return int(result.rowcount or 0)


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

"""``RagTables``: the queries behind ``/v1/vector_stores`` and the indexer's.

As with files and batches, every API read and change names the owner (another tenant's
store is not found), and the indexer's changes name the lease they hold.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update

from llmport.db.job_models import (
    VectorChunk,
    VectorStore,
    VectorStoreFile,
    VectorStoreFileBatch,
)
from llmport.db.jobs import now

STATUSES = ("in_progress", "completed", "failed", "cancelled")
MIN_EXPIRY_DAYS = 1  # the shortest expires_after a store may have (api/jobs/params.py)


def new_store_id() -> str:
    return f"vs_{secrets.token_hex(12)}"


def new_file_batch_id() -> str:
    return f"vsfb_{secrets.token_hex(12)}"


class RagTables:
    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions

    # stores

    async def create_store(self, store: VectorStore, files: list[VectorStoreFile]) -> None:
        async with self.sessions.begin() as session:
            session.add(store)
            await session.flush()
            session.add_all(files)

    async def get_store(self, owner: str | None, store_id: str) -> VectorStore | None:
        """The store (``owner`` None: whoever owns it, for the indexer)."""
        async with self.sessions() as session:
            row = await session.get(VectorStore, store_id)
        return row if row is not None and (owner is None or row.owner == owner) else None

    async def list_stores(self, owner: str, *, limit: int, after: str | None,
                          newest_first: bool) -> list[VectorStore]:
        where: list[Any] = [VectorStore.owner == owner]
        async with self.sessions() as session:
            if after is not None:
                anchor = await session.get(VectorStore, after)
                if anchor is None or anchor.owner != owner:
                    return []
                where.append(_beyond(VectorStore.created_at, VectorStore.id, anchor.created_at,
                                     anchor.id, newest_first))
            order = ((VectorStore.created_at.desc(), VectorStore.id.desc()) if newest_first
                     else (VectorStore.created_at, VectorStore.id))
            rows = await session.scalars(select(VectorStore).where(*where).order_by(*order)
                                         .limit(limit))
            return list(rows.all())

    async def update_store(self, owner: str, store_id: str, fields: dict[str, Any]
                           ) -> VectorStore | None:
        async with self.sessions.begin() as session:
            await session.execute(update(VectorStore).where(
                VectorStore.id == store_id, VectorStore.owner == owner).values(**fields))
        return await self.get_store(owner, store_id)

    async def delete_store(self, owner: str, store_id: str) -> bool:
        async with self.sessions.begin() as session:
            owned = select(VectorStore.id).where(VectorStore.id == store_id,
                                                 VectorStore.owner == owner)
            await session.execute(delete(VectorChunk).where(
                VectorChunk.vector_store_id.in_(owned)))
            await session.execute(delete(VectorStoreFile).where(
                VectorStoreFile.vector_store_id.in_(owned)))
            await session.execute(delete(VectorStoreFileBatch).where(
                VectorStoreFileBatch.vector_store_id.in_(owned)))
            result = await session.execute(delete(VectorStore).where(
                VectorStore.id == store_id, VectorStore.owner == owner))
        return bool(result.rowcount)

    async def mark_active(self, store_id: str) -> None:
        async with self.sessions.begin() as session:
            await session.execute(update(VectorStore).where(VectorStore.id == store_id)
                                  .values(last_active_at=now()))

    async def purge_expired_stores(self) -> int:
        """Delete the stores whose ``expires_after`` has run out; how many went."""
        at, removed = now(), 0
        # Only a store idle for a day (the shortest expiry) can have run out: the others,
        # however many, are not read every time this runs.
        idle_since = func.coalesce(VectorStore.last_active_at, VectorStore.created_at)
        async with self.sessions() as session:
            rows = (await session.execute(select(
                VectorStore.id, VectorStore.owner, VectorStore.expires_days,
                VectorStore.last_active_at, VectorStore.created_at).where(
                VectorStore.expires_days.is_not(None),
                idle_since <= at - timedelta(days=MIN_EXPIRY_DAYS)))).all()
        for store_id, owner, days, active, created in rows:
            if (active or created) + timedelta(days=days) <= at:
                removed += await self.delete_store(owner, store_id)
        return removed

    async def file_counts(self, store_ids: list[str]) -> dict[str, dict[str, int]]:
        """Each store's files by status (every status present, zero when none)."""
        counts = {store_id: dict.fromkeys(STATUSES, 0) for store_id in store_ids}
        if not store_ids:
            return counts
        query = (select(VectorStoreFile.vector_store_id, VectorStoreFile.status, func.count())
                 .where(VectorStoreFile.vector_store_id.in_(store_ids))
                 .group_by(VectorStoreFile.vector_store_id, VectorStoreFile.status))
        async with self.sessions() as session:
            for store_id, status, count in (await session.execute(query)).all():
                counts[store_id][status] = count
        return counts

    # a store's files

    async def add_file(self, row: VectorStoreFile) -> VectorStoreFile | None:
        """Add a file to a store; None when it is there already (it is left as it is)."""
        async with self.sessions.begin() as session:
            if await session.get(VectorStoreFile, (row.vector_store_id, row.file_id)):
                return None
            session.add(row)
        return row

    async def get_file(self, store_id: str, file_id: str) -> VectorStoreFile | None:
        async with self.sessions() as session:
            return await session.get(VectorStoreFile, (store_id, file_id))

    async def list_files(self, store_id: str, *, limit: int, after: str | None,
                         newest_first: bool, status: str | None,
                         file_ids: list[str] | None = None) -> list[VectorStoreFile]:
        """A page of the store's files (only ``file_ids``, when given: a batch's)."""
        where: list[Any] = [VectorStoreFile.vector_store_id == store_id]
        if file_ids is not None:
            where.append(VectorStoreFile.file_id.in_(file_ids))
        if status is not None:
            where.append(VectorStoreFile.status == status)
        async with self.sessions() as session:
            if after is not None:
                anchor = await session.get(VectorStoreFile, (store_id, after))
                if anchor is None:
                    return []
                where.append(_beyond(VectorStoreFile.created_at, VectorStoreFile.file_id,
                                     anchor.created_at, anchor.file_id, newest_first))
            order = ((VectorStoreFile.created_at.desc(), VectorStoreFile.file_id.desc())
                     if newest_first else (VectorStoreFile.created_at, VectorStoreFile.file_id))
            rows = await session.scalars(select(VectorStoreFile).where(*where)
                                         .order_by(*order).limit(limit))
            return list(rows.all())

    async def set_attributes(self, store_id: str, file_id: str,
                             attributes: dict[str, Any] | None) -> None:
        async with self.sessions.begin() as session:
            await session.execute(update(VectorStoreFile).where(
                VectorStoreFile.vector_store_id == store_id, VectorStoreFile.file_id == file_id)
                .values(attributes=attributes))
            await _touch(session, store_id, 0)

    async def remove_file(self, store_id: str, file_id: str) -> bool:
        async with self.sessions.begin() as session:
            row = await session.get(VectorStoreFile, (store_id, file_id))
            if row is None:
                return False
            await session.execute(delete(VectorChunk).where(
                VectorChunk.vector_store_id == store_id, VectorChunk.file_id == file_id))
            await session.delete(row)
            await _touch(session, store_id, -row.usage_bytes)
        return True

    async def file_texts(self, store_id: str, file_id: str) -> list[str]:
        """A file's chunks' texts, in order."""
        query = (select(VectorChunk.text)
                 .where(VectorChunk.vector_store_id == store_id, VectorChunk.file_id == file_id)
                 .order_by(VectorChunk.position))
        async with self.sessions() as session:
            return list((await session.scalars(query)).all())

    async def searchable(self, store_id: str) -> list[tuple[bytes, str, str, str, Any]]:
        """(embedding, text, file id, filename, attributes) of the store's indexed chunks:
        plain rows, no ORM objects (a store may have 100,000 chunks)."""
        query = (select(VectorChunk.embedding, VectorChunk.text, VectorStoreFile.file_id,
                        VectorStoreFile.filename, VectorStoreFile.attributes)
                 .join(VectorStoreFile, (VectorStoreFile.vector_store_id
                                         == VectorChunk.vector_store_id)
                       & (VectorStoreFile.file_id == VectorChunk.file_id))
                 .where(VectorChunk.vector_store_id == store_id,
                        VectorStoreFile.status == "completed")
                 .order_by(VectorChunk.file_id, VectorChunk.position))
        async with self.sessions() as session:
            return [tuple(row) for row in (await session.execute(query)).all()]

    async def revision(self, store_id: str) -> int | None:
        async with self.sessions() as session:
            found: int | None = await session.scalar(
                select(VectorStore.revision).where(VectorStore.id == store_id))
        return found

    # file batches

    async def create_file_batch(self, batch: VectorStoreFileBatch,
                                rows: list[VectorStoreFile]) -> None:
        """The batch, and those of its files the store does not hold yet (one transaction;
        a file already there is left as it is and counted as it is)."""
        async with self.sessions.begin() as session:
            held = set((await session.scalars(select(VectorStoreFile.file_id).where(
                VectorStoreFile.vector_store_id == batch.vector_store_id,
                VectorStoreFile.file_id.in_(batch.file_ids)))).all())
            session.add(batch)
            session.add_all(row for row in rows if row.file_id not in held)

    async def get_file_batch(self, store_id: str, batch_id: str
                             ) -> VectorStoreFileBatch | None:
        async with self.sessions() as session:
            row = await session.get(VectorStoreFileBatch, batch_id)
        return row if row is not None and row.vector_store_id == store_id else None

    async def file_batch_counts(self, batch: VectorStoreFileBatch) -> dict[str, int]:
        """The batch's files by status (every status present, zero when none)."""
        counts = dict.fromkeys(STATUSES, 0)
        query = (select(VectorStoreFile.status, func.count())
                 .where(VectorStoreFile.vector_store_id == batch.vector_store_id,
                        VectorStoreFile.file_id.in_(batch.file_ids))
                 .group_by(VectorStoreFile.status))
        async with self.sessions() as session:
            for status, count in (await session.execute(query)).all():
                counts[status] = count
        return counts

    async def cancel_file_batch(self, batch: VectorStoreFileBatch) -> None:
        """Its files not indexed yet become ``cancelled``; one being indexed loses its lease,
        so the indexer stores nothing of it (``finish_file`` names the lease)."""
        async with self.sessions.begin() as session:
            await session.execute(update(VectorStoreFile).where(
                VectorStoreFile.vector_store_id == batch.vector_store_id,
                VectorStoreFile.file_id.in_(batch.file_ids),
                VectorStoreFile.status == "in_progress")
                .values(status="cancelled", lease_owner=None, lease_until=None))
            await session.execute(update(VectorStoreFileBatch).where(
                VectorStoreFileBatch.id == batch.id, VectorStoreFileBatch.cancelled_at.is_(None))
                .values(cancelled_at=now()))

    # the indexer

    async def claim_file(self, runner: str, lease_s: float) -> VectorStoreFile | None:
        at = now()
        free = or_(VectorStoreFile.lease_until.is_(None), VectorStoreFile.lease_until < at)
        async with self.sessions() as session:
            candidates = (await session.execute(
                select(VectorStoreFile.vector_store_id, VectorStoreFile.file_id)
                .where(VectorStoreFile.status == "in_progress", free)
                .order_by(VectorStoreFile.created_at).limit(5))).all()
        for store_id, file_id in candidates:
            async with self.sessions.begin() as session:
                result = await session.execute(
                    update(VectorStoreFile).where(
                        VectorStoreFile.vector_store_id == store_id,
                        VectorStoreFile.file_id == file_id,
                        VectorStoreFile.status == "in_progress", free)
                    .values(lease_owner=runner, lease_until=at + timedelta(seconds=lease_s)))
            if result.rowcount:
                return await self.get_file(store_id, file_id)
        return None

    async def renew(self, row: VectorStoreFile, runner: str, lease_s: float) -> bool:
        async with self.sessions.begin() as session:
            result = await session.execute(update(VectorStoreFile).where(
                VectorStoreFile.vector_store_id == row.vector_store_id,
                VectorStoreFile.file_id == row.file_id, VectorStoreFile.lease_owner == runner)
                .values(lease_until=now() + timedelta(seconds=lease_s)))
        return bool(result.rowcount)

    async def finish_file(self, row: VectorStoreFile, runner: str, chunks: list[VectorChunk],
                          last_error: dict[str, str] | None, usage_bytes: int) -> bool:
        """Store a file's chunks and its final status in one transaction; False (nothing
        stored) when the lease was lost or the file was removed meanwhile."""
        async with self.sessions.begin() as session:
            result = await session.execute(update(VectorStoreFile).where(
                VectorStoreFile.vector_store_id == row.vector_store_id,
                VectorStoreFile.file_id == row.file_id, VectorStoreFile.lease_owner == runner)
                .values(status="failed" if last_error else "completed", last_error=last_error,
                        usage_bytes=usage_bytes, lease_owner=None, lease_until=None))
            if not result.rowcount:
                return False
            session.add_all(chunks)
            await _touch(session, row.vector_store_id, usage_bytes)
        return True

    async def hold(self, row: VectorStoreFile, runner: str, attempts: int,
                   seconds: float) -> None:
        """A failed indexing run: count it and keep the lease ``seconds`` longer."""
        async with self.sessions.begin() as session:
            await session.execute(update(VectorStoreFile).where(
                VectorStoreFile.vector_store_id == row.vector_store_id,
                VectorStoreFile.file_id == row.file_id, VectorStoreFile.lease_owner == runner)
                .values(attempts=attempts, lease_until=now() + timedelta(seconds=seconds)))

    async def release(self, row: VectorStoreFile, runner: str) -> None:
        async with self.sessions.begin() as session:
            await session.execute(update(VectorStoreFile).where(
                VectorStoreFile.vector_store_id == row.vector_store_id,
                VectorStoreFile.file_id == row.file_id, VectorStoreFile.lease_owner == runner)
                .values(lease_owner=None, lease_until=None))


async def _touch(session: Any, store_id: str, usage_delta: int) -> None:
    """A store's chunks or their files changed: a new revision (cached indexes reload)."""
    await session.execute(update(VectorStore).where(VectorStore.id == store_id).values(
        revision=VectorStore.revision + 1, usage_bytes=VectorStore.usage_bytes + usage_delta,
        last_active_at=now()))


def _beyond(created: Any, key: Any, anchor_created: Any, anchor_key: Any,
            newest_first: bool) -> Any:
    if newest_first:
        return or_(created < anchor_created, (created == anchor_created) & (key < anchor_key))
    return or_(created > anchor_created, (created == anchor_created) & (key > anchor_key))

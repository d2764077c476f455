"""``JobTables``: the queries behind ``/v1/files`` and ``/v1/batches``, and the batch runner's.

Every read and change from the API names the owner (the principal id that made the row):
another tenant's file or batch is not found, never forbidden. The runner's changes name
the lease they hold: a replica that lost its lease (it stalled past ``lease_until`` and
another took the batch over) changes nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from llmport.db.file_writer import PART, FileWriter
from llmport.db.job_models import Batch, BatchItem, FileContent, StoredFile

__all__ = ["PART", "JobTables", "NewFile"]  # PART: file_writer's, where files are cut

MESSAGES = "/v1/messages"  # the endpoint of Anthropic's Message Batches
# The states a runner has work in; the rest are final.
ACTIVE = ("validating", "in_progress", "cancelling", "finalizing")
ANSWERS_PAGE = 64  # a finishing batch's answers read this many at a time (each may be large)


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Answered:
    """One batch line's answer, as the runner records it."""

    line: int
    custom_id: str
    status_code: int
    request_id: str
    body: bytes
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


@dataclass(slots=True)
class NewFile:
    purpose: str
    filename: str
    content: bytes | AsyncIterable[bytes]  # the bytes, or pieces of them as they are read
    expires_in: int | None = None  # seconds after its creation (``expires_after``)


def _unexpired(at: datetime) -> Any:
    """An expired file is gone for its owner at once, before the purge deletes it."""
    return or_(StoredFile.expires_at.is_(None), StoredFile.expires_at > at)


class JobTables:
    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions

    # files

    async def create_file(self, owner: str, new: NewFile) -> StoredFile:
        """Store a file (an empty one too), part by part as its pieces come."""
        async with self.sessions.begin() as session:
            writer = FileWriter(session, owner, new.purpose, new.filename, new.expires_in)
            if isinstance(new.content, bytes):
                await writer.write(new.content)
            else:
                async for piece in new.content:
                    await writer.write(piece)
            row = await writer.close(keep_empty=True)
            assert row is not None
            return row

    async def stored_bytes(self, owner: str) -> int:
        """What ``owner`` keeps in files, in bytes."""
        async with self.sessions() as session:
            total = await session.scalar(select(func.coalesce(func.sum(StoredFile.bytes), 0))
                                         .where(StoredFile.owner == owner, _unexpired(now())))
        return int(total or 0)

    async def get_file(self, owner: str, file_id: str) -> StoredFile | None:
        async with self.sessions() as session:
            row = await session.get(StoredFile, file_id)
        if row is None or row.owner != owner or (
                row.expires_at is not None and row.expires_at <= now()):
            return None
        return row

    async def get_files(self, owner: str, file_ids: list[str]) -> dict[str, StoredFile]:
        """Those of ``file_ids`` that ``owner`` has, by id (one query for a whole list)."""
        async with self.sessions() as session:
            rows = await session.scalars(select(StoredFile).where(
                StoredFile.id.in_(file_ids), StoredFile.owner == owner, _unexpired(now())))
            return {row.id: row for row in rows.all()}

    async def file_data(self, owner: str, file_id: str) -> bytes | None:
        """The whole file (expired or not: a running batch or indexer still reads its input;
        the API's routes find the file first)."""
        parts = [part async for part in self.file_parts(owner, file_id)]
        return b"".join(parts) if parts else None

    async def file_exists(self, owner: str, file_id: str) -> bool:
        """Whether ``owner`` has the file, expired or not (a batch reads its input to the end)."""
        async with self.sessions() as session:
            found = await session.scalar(select(StoredFile.id).where(
                StoredFile.id == file_id, StoredFile.owner == owner))
        return found is not None

    async def file_parts(self, owner: str, file_id: str) -> AsyncIterator[bytes]:
        """The file's bytes part by part, each read when wanted (a download of a large
        file holds one part at a time); nothing when it is not the owner's."""
        query = (select(FileContent.part).join(StoredFile, StoredFile.id == FileContent.file_id)
                 .where(StoredFile.id == file_id, StoredFile.owner == owner)
                 .order_by(FileContent.part))
        async with self.sessions() as session:
            numbers = list((await session.scalars(query)).all())
        for number in numbers:
            async with self.sessions() as session:
                data = await session.scalar(select(FileContent.data).where(
                    FileContent.file_id == file_id, FileContent.part == number))
            if data is None:  # deleted meanwhile
                return
            yield data

    async def list_files(self, owner: str, *, purpose: str | None, limit: int,
                         after: str | None, newest_first: bool) -> list[StoredFile]:
        """Up to ``limit`` files after the one with id ``after``, in creation order."""
        where = [StoredFile.owner == owner, _unexpired(now())]
        if purpose is not None:
            where.append(StoredFile.purpose == purpose)
        async with self.sessions() as session:
            if after is not None:
                anchor = await session.get(StoredFile, after)
                if anchor is None or anchor.owner != owner:
                    return []
                where.append(_beyond(StoredFile, anchor, newest_first))
            order = ((StoredFile.created_at.desc(), StoredFile.id.desc()) if newest_first
                     else (StoredFile.created_at, StoredFile.id))
            rows = await session.scalars(select(StoredFile).where(*where).order_by(*order)
                                         .limit(limit))
            return list(rows.all())

    async def delete_file(self, owner: str, file_id: str) -> bool:
        async with self.sessions.begin() as session:
            # The contents first: SQLite's cascade needs foreign keys on, PostgreSQL's none.
            mine = (StoredFile.id == file_id, StoredFile.owner == owner, _unexpired(now()))
            owned = select(StoredFile.id).where(*mine)
            await session.execute(delete(FileContent).where(FileContent.file_id.in_(owned)))
            result = await session.execute(delete(StoredFile).where(*mine))
        return bool(result.rowcount)

    async def purge_expired(self) -> int:
        """Delete the expired files no unfinished batch reads; how many went."""
        at = now()
        reading = select(Batch.input_file_id).where(Batch.status.in_(ACTIVE),
                                                    Batch.input_file_id.is_not(None))
        async with self.sessions.begin() as session:
            expired = list((await session.scalars(select(StoredFile.id).where(
                StoredFile.expires_at <= at, StoredFile.id.not_in(reading)))).all())
            if expired:
                await session.execute(delete(FileContent).where(
                    FileContent.file_id.in_(expired)))
                await session.execute(delete(StoredFile).where(StoredFile.id.in_(expired)))
        return len(expired)

    # batches, from the API

    async def create_batch(self, row: Batch) -> Batch:
        async with self.sessions.begin() as session:
            session.add(row)
        return row

    async def get_batch(self, owner: str | None, batch_id: str) -> Batch | None:
        """The batch (``owner`` None: whoever owns it, for the runner)."""
        async with self.sessions() as session:
            row = await session.get(Batch, batch_id)
        return row if row is not None and (owner is None or row.owner == owner) else None

    async def list_batches(self, owner: str, *, limit: int, after: str | None,
                           messages: bool, before: str | None = None) -> list[Batch]:
        """Newest first: those older than ``after``, or the ``limit`` just newer than
        ``before``. ``messages``: Anthropic's Message Batches, else OpenAI's batches."""
        kind = Batch.endpoint == MESSAGES if messages else Batch.endpoint != MESSAGES
        where = [Batch.owner == owner, kind]
        newest_first = before is None
        async with self.sessions() as session:
            cursor = after if after is not None else before
            if cursor is not None:
                anchor = await session.get(Batch, cursor)
                if anchor is None or anchor.owner != owner:
                    return []
                where.append(_beyond(Batch, anchor, newest_first))
            order = ((Batch.created_at.desc(), Batch.id.desc()) if newest_first
                     else (Batch.created_at, Batch.id))
            rows = list((await session.scalars(select(Batch).where(*where).order_by(*order)
                                               .limit(limit))).all())
        return rows if newest_first else rows[::-1]

    async def delete_batch(self, owner: str, batch_id: str) -> bool:
        """A batch and its files (input, output, errors) gone."""
        row = await self.get_batch(owner, batch_id)
        if row is None:
            return False
        for file_id in (row.input_file_id, row.output_file_id, row.error_file_id):
            if file_id is not None:
                await self.delete_file(owner, file_id)
        async with self.sessions.begin() as session:
            result = await session.execute(delete(Batch).where(Batch.id == batch_id,
                                                               Batch.owner == owner))
        return bool(result.rowcount)

    async def cancel_batch(self, owner: str, batch_id: str) -> Batch | None:
        """Ask a batch to stop (the runner finishes it as ``cancelled``). Returns the batch
        as it is after the request, which may already be final (not changed then)."""
        async with self.sessions.begin() as session:
            await session.execute(
                update(Batch).where(Batch.id == batch_id, Batch.owner == owner,
                                    Batch.status.in_(("validating", "in_progress")))
                .values(status="cancelling", cancelling_at=now()))
        return await self.get_batch(owner, batch_id)

    # batches, from the runner

    async def claim_batch(self, runner: str, lease_s: float) -> Batch | None:
        """The oldest batch with work left that no live lease holds, now leased to ``runner``."""
        at = now()
        free = or_(Batch.lease_until.is_(None), Batch.lease_until < at)
        async with self.sessions() as session:
            candidates = list((await session.scalars(
                select(Batch.id).where(Batch.status.in_(ACTIVE), free)
                .order_by(Batch.created_at).limit(5))).all())
        for batch_id in candidates:
            async with self.sessions.begin() as session:
                result = await session.execute(
                    update(Batch).where(Batch.id == batch_id, Batch.status.in_(ACTIVE), free)
                    .values(lease_owner=runner, lease_until=at + timedelta(seconds=lease_s)))
            if result.rowcount:
                return await self.get_batch(None, batch_id)
        return None

    async def renew_lease(self, batch: Batch, runner: str, lease_s: float) -> Batch | None:
        """Extend the lease; the batch as it is now, or None when the lease was lost."""
        async with self.sessions.begin() as session:
            result = await session.execute(
                update(Batch).where(Batch.id == batch.id, Batch.lease_owner == runner)
                .values(lease_until=now() + timedelta(seconds=lease_s)))
        if not result.rowcount:
            return None
        return await self.get_batch(None, batch.id)

    async def release(self, batch_id: str, runner: str) -> None:
        """Give the lease up (shutting down), so another replica may take the batch at once."""
        async with self.sessions.begin() as session:
            await session.execute(update(Batch).where(Batch.id == batch_id,
                                                      Batch.lease_owner == runner)
                                  .values(lease_owner=None, lease_until=None))

    async def hold(self, batch_id: str, runner: str, attempts: int, seconds: float) -> None:
        """A failed run: count it, and keep the batch's lease ``seconds`` longer, so that
        no replica runs it again before then (other batches go first meanwhile)."""
        async with self.sessions.begin() as session:
            await session.execute(update(Batch).where(
                Batch.id == batch_id, Batch.lease_owner == runner).values(
                attempts=attempts, lease_until=now() + timedelta(seconds=seconds)))

    async def in_use(self, owner: str, file_id: str) -> bool:
        """Whether a batch that has not finished reads this file."""
        async with self.sessions() as session:
            found = await session.scalar(select(Batch.id).where(
                Batch.owner == owner, Batch.input_file_id == file_id,
                Batch.status.in_(ACTIVE)).limit(1))
        return found is not None

    async def set_state(self, batch_id: str, runner: str, was: tuple[str, ...],
                        **fields: Any) -> bool:
        """Change a leased batch whose status is one of ``was``; False when the lease was lost
        or the status changed meanwhile (a cancellation)."""
        async with self.sessions.begin() as session:
            result = await session.execute(update(Batch).where(
                Batch.id == batch_id, Batch.lease_owner == runner, Batch.status.in_(was))
                .values(**fields))
        return bool(result.rowcount)

    async def answered_lines(self, batch_id: str) -> set[int]:
        async with self.sessions() as session:
            rows = await session.scalars(select(BatchItem.line)
                                         .where(BatchItem.batch_id == batch_id))
            return set(rows.all())

    async def record(self, batch_id: str, runner: str, answers: list[Answered]) -> bool:
        """Keep answers and count them, in one transaction; False (nothing kept) when the
        lease was lost or a line was already answered (another runner had it)."""
        ok = [answer for answer in answers if answer.ok]
        async with self.sessions.begin() as session:
            counted = await session.execute(
                update(Batch).where(Batch.id == batch_id, Batch.lease_owner == runner)
                .values(completed=Batch.completed + len(ok),
                        failed=Batch.failed + len(answers) - len(ok),
                        input_tokens=Batch.input_tokens + sum(a.input_tokens for a in answers),
                        output_tokens=Batch.output_tokens
                        + sum(a.output_tokens for a in answers),
                        cached_tokens=Batch.cached_tokens
                        + sum(a.cached_tokens for a in answers)))
            if not counted.rowcount:
                return False
            answered = await session.scalar(select(BatchItem.line).where(
                BatchItem.batch_id == batch_id,
                BatchItem.line.in_([answer.line for answer in answers])).limit(1))
            if answered is not None:
                await session.rollback()
                return False
            await session.execute(insert(BatchItem), [
                {"batch_id": batch_id, "line": a.line, "custom_id": a.custom_id,
                 "status_code": a.status_code, "request_id": a.request_id, "body": a.body}
                for a in answers])
        return True

    @asynccontextmanager
    async def finishing(self, batch_id: str, runner: str) -> AsyncIterator[Finishing | None]:
        """End a batch in one transaction: inside, write its output files from its kept
        answers and set its final fields (``Finishing``); at the end its lease is dropped
        and its answers deleted. None (nothing to do) when the lease was lost."""
        async with self.sessions.begin() as session:
            leased = await session.scalar(select(Batch).where(
                Batch.id == batch_id, Batch.lease_owner == runner).with_for_update())
            if leased is None:
                yield None
                return
            end = Finishing(session, batch_id)
            yield end
            for name, value in {**end.fields, "lease_owner": None, "lease_until": None}.items():
                setattr(leased, name, value)
            await session.execute(delete(BatchItem).where(BatchItem.batch_id == batch_id))


@dataclass(slots=True)
class Finishing:
    """A batch being ended (``JobTables.finishing``): its answers to read, files to write,
    and ``fields``, the batch's columns to set."""

    session: AsyncSession
    batch_id: str
    fields: dict[str, Any] = field(default_factory=dict)

    async def answers(self) -> AsyncIterator[Any]:
        """The kept answers in line order (rows of line, custom_id, status_code, request_id,
        body), ``ANSWERS_PAGE`` at a time: not ORM objects, which the session would keep
        until the commit."""
        columns = (BatchItem.line, BatchItem.custom_id, BatchItem.status_code,
                   BatchItem.request_id, BatchItem.body)
        after = -1
        while True:
            page = (await self.session.execute(
                select(*columns).where(BatchItem.batch_id == self.batch_id,
                                       BatchItem.line > after)
                .order_by(BatchItem.line).limit(ANSWERS_PAGE))).all()
            for row in page:
                yield row
            if len(page) < ANSWERS_PAGE:
                return
            after = page[-1].line

    def file(self, owner: str, purpose: str, filename: str,
             expires_in: int | None) -> FileWriter:
        return FileWriter(self.session, owner, purpose, filename, expires_in)


def _beyond(model: Any, anchor: Any, newest_first: bool) -> Any:
    """Rows after ``anchor`` in (created_at, id) order, descending or ascending."""
    if newest_first:
        return or_(model.created_at < anchor.created_at,
                   and_(model.created_at == anchor.created_at, model.id < anchor.id))
    return or_(model.created_at > anchor.created_at,
               and_(model.created_at == anchor.created_at, model.id > anchor.id))

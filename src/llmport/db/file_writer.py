"""``FileWriter``: a file stored in the database part by part, as its bytes come.

An upload or a batch's output file can be hundreds of megabytes; written this way it
holds at most one part (``PART`` bytes) in memory, whatever its size.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from llmport.db.job_models import FileContent, StoredFile

PART = 1 << 20  # bytes of a file per file_contents row


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


class FileWriter:
    """A file written in the caller's transaction: ``write`` its bytes in pieces of any size,
    then ``close``. Its row is added with its first part, so a writer that was given
    nothing leaves no file."""

    def __init__(self, session: AsyncSession, owner: str, purpose: str, filename: str,
                 expires_in: int | None = None) -> None:
        self._session = session
        self._row = StoredFile(id=new_file_id(), owner=owner, purpose=purpose,
                               filename=filename, bytes=0)
        self._expires_in = expires_in
        self._pending = bytearray()
        self._parts = 0

    async def write(self, data: bytes) -> None:
        if len(data) == PART and not self._pending:  # a whole part as it is (no copy)
            await self._store(data)
            return
        pending = self._pending
        pending += data
        while len(pending) >= PART:
            with memoryview(pending) as view:
                part = bytes(view[:PART])
            del pending[:PART]
            await self._store(part)

    async def close(self, keep_empty: bool = False) -> StoredFile | None:
        """The file's row, its size now set; None when nothing was written (unless
        ``keep_empty``: then an empty file, of one empty part)."""
        if self._pending or (keep_empty and not self._parts):
            part, self._pending = bytes(self._pending), bytearray()
            await self._store(part)
        if not self._parts:
            return None
        await self._session.flush()  # the size, counted as the parts went in
        return self._row

    async def _store(self, part: bytes) -> None:
        row = self._row
        if not self._parts:
            row.created_at = created = datetime.now(UTC)
            row.expires_at = (None if self._expires_in is None
                              else created + timedelta(seconds=self._expires_in))
            self._session.add(row)
            await self._session.flush()  # the row before its contents (a foreign key)
        # Not ORM objects: the session would keep every part it had seen until the commit.
        await self._session.execute(insert(FileContent).values(
            file_id=row.id, part=self._parts, data=part))
        self._parts += 1
        row.bytes += len(part)

"""The SQLite spend writer (``db/bulk.py``): its own connection, bound a chunk at a time on the
event loop, with BEGIN and COMMIT in a worker thread. What it must keep: a batch is all or
nothing, the loop keeps turning while a batch is written or waits for another writer, and
an insert cancelled at any point leaves no transaction behind for the next one."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llmport.db.bulk import SQLiteSpendWriter
from llmport.db.database import Database

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(**fields: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "request_id": "req-1", "created_at": T0,
            "principal_kind": "key", "endpoint": "/v1/chat/completions", "model": "gpt-4o",
            "status": 200, **fields}


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'spend.db'}")
    await database.upgrade()
    yield database
    await database.aclose()


def stored_ids(db: Database) -> set[str]:
    path = db.engine.url.database
    assert path
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM spend_log")}


def hold_write_lock(db: Database) -> sqlite3.Connection:
    """Another process's writer, as far as SQLite can tell: a connection in a write
    transaction."""
    path = db.engine.url.database
    assert path
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_sqlite_file_gets_the_writer_and_memory_the_engine(db: Database) -> None:
    assert isinstance(db._spend_writer, SQLiteSpendWriter)
    memory = Database("sqlite+aiosqlite://")
    try:
        assert memory._spend_writer is None
    finally:
        await memory.aclose()


async def test_a_failing_row_in_a_later_chunk_leaves_none_of_the_batch(db: Database) -> None:
    batch = [record() for _ in range(3 * SQLiteSpendWriter.CHUNK)]
    batch[2 * SQLiteSpendWriter.CHUNK + 1]["request_id"] = None  # NOT NULL
    with pytest.raises(sqlite3.IntegrityError):
        await db.insert_spend(batch)
    assert stored_ids(db) == set()
    good = [record() for _ in range(5)]
    assert await db.insert_spend(good) == 5  # no transaction was left open
    assert stored_ids(db) == {row["id"] for row in good}


async def test_the_loop_turns_between_chunks(db: Database) -> None:
    turns = 0
    seen: list[int] = []  # the loop's turns when each chunk was written

    class Watched:
        def __init__(self, connection: sqlite3.Connection) -> None:
            self.connection = connection

        def __getattr__(self, name: str) -> Any:
            return getattr(self.connection, name)

        def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
            seen.append(turns)
            return self.connection.executemany(sql, rows)

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    writer = db._spend_writer
    assert writer is not None
    await db.insert_spend([record()])  # opens the writer's connection
    assert writer._connection is not None
    writer._connection = Watched(writer._connection)  # type: ignore[assignment]
    counter = asyncio.create_task(count_turns())
    try:
        batch = [record() for _ in range(10 * SQLiteSpendWriter.CHUNK)]
        assert await db.insert_spend(batch) == len(batch)
    finally:
        counter.cancel()
    assert len(seen) == 10
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))


async def test_waiting_for_another_writer_does_not_block_the_loop(db: Database) -> None:
    other = hold_write_lock(db)
    try:
        insert = asyncio.create_task(db.insert_spend([record(id="r1")]))
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not insert.done()  # still waiting for the lock, in a thread
        assert ticks == 20
    finally:
        other.execute("COMMIT")
        other.close()
    assert await insert == 1
    assert stored_ids(db) == {"r1"}


async def test_an_insert_cancelled_while_waiting_leaves_no_transaction(db: Database) -> None:
    other = hold_write_lock(db)
    try:
        insert = asyncio.create_task(db.insert_spend([record(id="lost")]))
        await asyncio.sleep(0.05)
        insert.cancel()
        with pytest.raises(asyncio.CancelledError):
            await insert
    finally:
        other.execute("COMMIT")  # the cancelled BEGIN now gets its lock, in its thread
        other.close()
    assert await db.insert_spend([record(id="kept")]) == 1
    assert stored_ids(db) == {"kept"}
    # the writer's connection is not left in a transaction that would lock out others
    assert db._spend_writer is not None
    assert db._spend_writer._connection is not None
    assert not db._spend_writer._connection.in_transaction


async def test_an_insert_cancelled_between_chunks_rolls_back(db: Database) -> None:
    batch = [record() for _ in range(50 * SQLiteSpendWriter.CHUNK)]
    insert = asyncio.create_task(db.insert_spend(batch))
    writer = db._spend_writer
    assert writer is not None
    for _ in range(5000):  # BEGIN, in its thread
        if writer._connection is not None and writer._connection.in_transaction:
            break
        await asyncio.sleep(0.001)
    for _ in range(3):  # a few chunks in
        await asyncio.sleep(0)
    assert not insert.done()
    insert.cancel()
    with pytest.raises(asyncio.CancelledError):
        await insert
    assert stored_ids(db) == set()
    assert await db.insert_spend([record(id="after")]) == 1
    assert stored_ids(db) == {"after"}


async def test_close_ends_an_open_transaction(db: Database) -> None:
    other = hold_write_lock(db)
    insert = asyncio.create_task(db.insert_spend([record(id="x")]))
    await asyncio.sleep(0.05)
    insert.cancel()
    with pytest.raises(asyncio.CancelledError):
        await insert
    other.execute("COMMIT")
    other.close()
    await db.aclose()  # waits for the BEGIN in its thread, rolls it back, closes
    path = db.engine.url.database
    assert path
    probe = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")  # the lock is free again
        probe.execute("ROLLBACK")
    finally:
        probe.close()

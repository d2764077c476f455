"""The SQLite spend writer (``db/bulk.py``): its own connection, bound a chunk at a time on the
event loop, with BEGIN and COMMIT in a worker thread. What it must keep: a batch is all or
nothing, the loop keeps turning while a batch is written or waits for another writer, and
an insert cancelled at any point leaves no transaction behind for the next one."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from llmport.db.bulk import SQLiteSpendWriter
from llmport.db.database import Database

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(**fields: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "request_id": "req-1", "created_at": T0,
            "principal_kind": "key", "endpoint": "/v1/chat/completions", "model": "gpt-4o",
            "status": 200, **fields}



def db_path(db: Database) -> str:
    path = db.engine.url.database
    assert path
    return path


def stored_ids(db: Database) -> set[str]:
    path = db_path(db)
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM spend_log")}


def hold_write_lock(db: Database) -> sqlite3.Connection:
    """Another process's writer, as far as SQLite can tell: a connection in a write
    transaction."""
    path = db_path(db)
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


async def test_a_refused_record_in_a_later_chunk_leaves_none_of_the_batch(db: Database) -> None:
    """Records become rows chunk by chunk, inside the transaction: one that ``spend_row``
    refuses fails the whole batch, as it did when every record was converted first."""
    batch = [record() for _ in range(3 * SQLiteSpendWriter.CHUNK)]
    batch[-1]["colour"] = "red"
    with pytest.raises(ValueError, match="unknown fields: colour"):
        await db.insert_spend(batch)
    assert stored_ids(db) == set()
    assert await db.insert_spend(batch[:2]) == 2


class Watched:
    """A writer's connection that notes the loop's turn at each chunk and advances a clock."""

    def __init__(self, connection: sqlite3.Connection, on_chunk: Callable[[], None]) -> None:
        self.connection = connection
        self.on_chunk = on_chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self.connection, name)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        self.on_chunk()
        return self.connection.executemany(sql, rows)


async def write_watched(db: Database, clock: Callable[[], float], rows: int,
                        on_chunk: Callable[[], None], on_turn: Callable[[], None]) -> int:
    """Insert ``rows`` records through a writer on ``clock`` while a task turns the loop."""
    path = db_path(db)
    writer = SQLiteSpendWriter(path, db._spend_insert, 1000, clock=clock)
    await writer.insert([record()])  # opens its connection
    assert writer._connection is not None
    writer._connection = Watched(writer._connection, on_chunk)  # type: ignore[assignment]

    async def turning() -> None:
        while True:
            on_turn()
            await asyncio.sleep(0)

    turner = asyncio.create_task(turning())
    try:
        return await writer.insert([record() for _ in range(rows)])
    finally:
        turner.cancel()
        await writer.close()


async def test_the_loop_turns_once_the_writers_slice_is_used(db: Database) -> None:
    now = 0.0
    turns = 0
    seen: list[int] = []  # the loop's turns when each chunk was written

    def clock() -> float:
        nonlocal now
        now += 0.001  # every reading finds the 0.5 ms slice used
        return now

    def on_turn() -> None:
        nonlocal turns
        turns += 1

    chunks = 10
    added = await write_watched(db, clock, chunks * SQLiteSpendWriter.CHUNK,
                                lambda: seen.append(turns), on_turn)
    assert added == chunks * SQLiteSpendWriter.CHUNK
    assert len(seen) == chunks
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))


async def test_the_writer_takes_a_share_of_long_turns(db: Database) -> None:
    """When the rest of the loop takes 20 ms a turn, the writer's slice grows to 15% of that:
    a fixed 0.5 ms slice fell behind the requests at high concurrency."""
    now = 0.0
    turns = 0
    seen: list[int] = []

    def on_chunk() -> None:
        nonlocal now
        seen.append(turns)
        now += 0.0001  # a chunk takes 0.1 ms

    def on_turn() -> None:
        nonlocal now, turns
        turns += 1
        now += 0.020  # the rest of a turn takes 20 ms

    chunks = 200
    added = await write_watched(db, lambda: now, chunks * SQLiteSpendWriter.CHUNK, on_chunk,
                                on_turn)
    assert added == chunks * SQLiteSpendWriter.CHUNK
    per_turn = [len(list(group)) for _, group in itertools.groupby(seen)]
    assert len(per_turn) > 1  # it did let the loop turn
    # 15% of 20 ms is 3 ms: 30 chunks a turn (a fixed 0.5 ms slice would write 5)
    assert max(per_turn[1:-1]) >= 25
    assert max(per_turn) <= 31


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
    path = db_path(db)
    probe = sqlite3.connect(path, timeout=0.1, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")  # the lock is free again
        probe.execute("ROLLBACK")
    finally:
        probe.close()


async def test_the_wal_is_checkpointed_in_the_background(db: Database) -> None:
    """The writer's connection never checkpoints on commit (that could stall the loop); a
    passive checkpoint in a thread copies its commits into the database file."""
    path = db_path(db)
    writer = SQLiteSpendWriter(path, db._spend_insert, 1000)
    writer.CHECKPOINT_INTERVAL_S = 0.0
    try:
        assert await writer.insert([record() for _ in range(100)]) == 100
        assert writer._checkpoint is not None
        await writer._checkpoint
    finally:
        await writer.close()
    # The database file alone, without its WAL: the rows are there only if checkpointed.
    file_only = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        assert file_only.execute("SELECT count(*) FROM spend_log").fetchone() == (100,)
    finally:
        file_only.close()


async def test_two_writers_on_one_file_take_turns(db: Database) -> None:
    """Two workers' writers (each its own connection, as in two processes): while one holds
    the write lock across its slices, the other's BEGIN waits and tries again; both batches
    land whole."""
    path = db_path(db)
    first = SQLiteSpendWriter(path, db._spend_insert, 5000)
    second = SQLiteSpendWriter(path, db._spend_insert, 5000)
    batches = [[record() for _ in range(3000)] for _ in range(2)]
    try:
        added = await asyncio.gather(first.insert(batches[0]), second.insert(batches[1]))
    finally:
        await first.close()
        await second.close()
    assert added == [3000, 3000]
    assert stored_ids(db) == {row["id"] for batch in batches for row in batch}


def test_journal_records_take_the_shortcut_to_the_same_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal's records (epoch seconds, bool flags, known fields) become the driver's
    tuple without ``spend_row``, and exactly as ``spend_row`` + the bind processors would
    make it; anything else still goes through ``spend_row`` (which converts or refuses it)."""
    from sqlalchemy.dialects import sqlite

    from llmport.db import models
    from llmport.db.bulk import SpendInsert

    insert = SpendInsert(sqlite.dialect())
    journal_like = [
        record(created_at=1767225600.0),  # a whole second: six zeros of microseconds
        record(created_at=1767225600.000001, stream=True, cache_hit=False, ttft_ms=1.5),
        record(created_at=1767225601.999999, key_id="k", user_id=None, team_id="t",
               org_id="o", served_model="m", deployment="d", error_type="E",
               prompt_tokens=3, completion_tokens=4, cached_tokens=1, cost=0.25,
               latency_ms=2.0, attempts=2, stream=False, cache_hit=True),
    ]
    expected = [insert.values(models.spend_row(r)) for r in journal_like]
    others = [record(), record(created_at="2026-03-01T12:00:00.5"),
              record(created_at=1767225600), record(created_at=1767225600.5, stream=1)]
    others_expected = [insert.values(models.spend_row(r)) for r in others]

    real_spend_row = models.spend_row
    general: list[dict[str, Any]] = []

    def counting_spend_row(r: dict[str, Any]) -> dict[str, Any]:
        general.append(r)
        return real_spend_row(r)

    monkeypatch.setattr(models, "spend_row", counting_spend_row)
    assert [insert.record_values(r) for r in journal_like] == expected
    assert general == []  # the shortcut
    assert [insert.record_values(r) for r in others] == others_expected
    assert general == others
    with pytest.raises(ValueError, match="unknown fields: colour"):
        insert.record_values(record(created_at=1.0, colour="red"))
    incomplete = record(created_at=1.0)
    del incomplete["model"]
    with pytest.raises(ValueError, match="lacks: model"):
        insert.record_values(incomplete)


def test_sqlite_time_is_the_processors_text_for_any_epoch() -> None:
    """Rounded as ``datetime.fromtimestamp`` rounds (half to even, carried into the second),
    across second boundaries (the cached text) and before 1970."""
    import random

    from sqlalchemy.dialects import sqlite

    from llmport.db.bulk import sqlite_time
    from llmport.db.models import SpendLog

    dialect = sqlite.dialect()
    column_type = SpendLog.__table__.c.created_at.type
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    rng = random.Random(7)
    edges = [0.0, 1.0, -1.5, -0.0000005, 1767225600.0, 1767225600.9999995, 1767225600.9999994,
             1767225600.0000005, 1767225600.0000015, 1767225599.99999999]
    for epoch in edges + [rng.uniform(-1e9, 4e9) for _ in range(20_000)] + sorted(
            rng.uniform(1767225600, 1767225603) for _ in range(2_000)):
        assert sqlite_time(epoch) == process(datetime.fromtimestamp(epoch, UTC)), epoch

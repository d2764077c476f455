"""A worker process for the spend journal's crash tests, and the sink it shares with the test.

``python -m tests.support.journal_crash DIR DB COUNT FLUSHED PREFIX [die-after-insert]``
starts a ``SpendJournal`` in DIR over a SQLite sink in DB, appends FLUSHED
records and flushes them, appends the rest up to COUNT, prints ``ready`` and
waits to be killed. With ``die-after-insert`` it kills itself with SIGKILL
right after the sink committed its first batch, before the journal could
delete the segment: the crash that makes a replay offer records twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from llmport.accounting.journal import SpendJournal


class SQLiteSink:
    """A real, shared, idempotent sink: ``spend`` keyed by id, plus every id ever offered."""

    def __init__(self, path: Path, *, die_after_insert: bool = False) -> None:
        self.path = path
        self.die_after_insert = die_after_insert
        with closing(sqlite3.connect(path, timeout=30)) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS spend (id TEXT PRIMARY KEY, record TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS offers (id TEXT)")

    async def insert_spend(self, records: Sequence[dict[str, Any]]) -> int:
        new = await asyncio.to_thread(self._insert, list(records))
        if self.die_after_insert:
            os.kill(os.getpid(), signal.SIGKILL)
        return new

    def _insert(self, records: list[dict[str, Any]]) -> int:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            db.executemany("INSERT INTO offers (id) VALUES (?)", [(r["id"],) for r in records])
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO spend (id, record) VALUES (?, ?)",
                           [(r["id"], repr(r)) for r in records])
            return db.total_changes - before

    def ids(self) -> list[str]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            return [row[0] for row in db.execute("SELECT id FROM spend ORDER BY id")]

    def offers(self) -> Counter[str]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db:
            return Counter(row[0] for row in db.execute("SELECT id FROM offers"))


def record(prefix: str, index: int) -> dict[str, Any]:
    return {"id": f"{prefix}{index:08x}", "request_id": f"req-{index}", "created_at": 1.5,
            "key_id": "key_1", "model": "demo", "tokens": index, "cost": 0.001 * index,
            "status": 200}


async def main(argv: list[str]) -> None:
    directory, db, count, flushed, prefix = argv[:5]
    sink = SQLiteSink(Path(db), die_after_insert="die-after-insert" in argv[5:])
    journal = SpendJournal(directory, sink, flush_interval=3600)
    await journal.start()
    for index in range(int(flushed)):
        journal.append(record(prefix, index))
    if int(flushed):
        await journal.flush()
    for index in range(int(flushed), int(count)):
        journal.append(record(prefix, index))
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))

"""A batch's answers kept as they come, in as few transactions as they arrive in: each once,
counted exactly, and nothing kept once the lease is lost (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from llmport.batches.runner import Recorder
from llmport.db import Database
from llmport.db.job_models import Batch
from llmport.db.jobs import Answered, JobTables, new_batch_id, now
from tests.test_db import db, migrated_url, new_database  # noqa: F401 (fixtures)


class CountedTables(JobTables):
    """The real tables, counting the transactions that keep answers."""

    transactions = 0

    async def record(self, batch_id: str, runner: str, answers: list[Answered]) -> bool:
        self.transactions += 1
        return await super().record(batch_id, runner, answers)


def answer(line: int, status: int = 200) -> Answered:
    return Answered(line, f"c{line}", status, f"req_{line}", b'{"line": %d}' % line,
                    input_tokens=3, output_tokens=5, cached_tokens=1)


async def test_answers_arriving_together_are_kept_together_each_once(db: Database) -> None:  # noqa: F811
    tables = CountedTables(db.sessions)
    created = now()
    batch = await tables.create_batch(Batch(
        id=new_batch_id(), owner="me", run_as={"kind": "master"},
        endpoint="/v1/chat/completions", input_file_id="file-x", completion_window="24h",
        status="in_progress", created_at=created, expires_at=created + timedelta(days=1),
        total=60, completed=0, failed=0, input_tokens=0, output_tokens=0, cached_tokens=0,
        lease_owner="lease-1", lease_until=created + timedelta(minutes=5)))
    keep = Recorder(tables, batch.id, "lease-1")

    results = await asyncio.gather(*(keep(answer(i, 200 if i % 4 else 500)) for i in range(40)))

    assert results == [True] * 40
    assert tables.transactions == 1  # all came before the first write began: one transaction
    assert await tables.answered_lines(batch.id) == set(range(40))
    kept = await tables.get_batch("me", batch.id)
    assert kept is not None
    assert (kept.completed, kept.failed) == (30, 10)
    assert (kept.input_tokens, kept.output_tokens, kept.cached_tokens) == (120, 200, 40)

    # One at a time, each its own transaction.
    assert await keep(answer(40)) is True and tables.transactions == 2
    # A group with a line already kept (another runner answered it): nothing of it is kept.
    again = await asyncio.gather(keep(answer(41)), keep(answer(42)), keep(answer(5)))
    assert again == [False, False, False]
    # A runner whose lease is gone keeps nothing.
    assert await Recorder(tables, batch.id, "lease-2")(answer(50)) is False
    assert await tables.answered_lines(batch.id) == set(range(41))
    kept = await tables.get_batch("me", batch.id)
    assert kept is not None and (kept.completed, kept.failed) == (31, 10)

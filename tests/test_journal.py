"""The spend journal on real files and real processes: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import orjson
import pytest
from structlog.testing import capture_logs

from llmport.accounting.journal import SpendJournal
from llmport.accounting.journal_segments import lock
from tests.support.journal_crash import SQLiteSink, record

ROOT = Path(__file__).resolve().parents[1]


class MemorySink:
    """Idempotent like the database: records keyed by id; calls in ``failing`` raise."""

    def __init__(self, failing: Sequence[int] = ()) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.offers: Counter[str] = Counter()  # ids per successful call, duplicates included
        self.sizes: list[int] = []  # of the successful calls
        self.calls = 0
        self.failing = set(failing)

    async def insert_spend(self, records: Sequence[dict[str, Any]]) -> int:
        self.calls += 1
        if self.calls in self.failing:
            raise ConnectionError("database unavailable")
        self.sizes.append(len(records))
        new = 0
        for item in records:
            self.offers[item["id"]] += 1
            if item["id"] not in self.records:
                self.records[item["id"]] = item
                new += 1
        return new


def records(count: int) -> list[dict[str, Any]]:
    prefix = uuid4().hex[:16]
    return [record(prefix, index) for index in range(count)]


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(2000):  # a guard against hanging, not a timing threshold
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Starts journals in tmp_path/journal; closes any a failed test left open."""
    journals: list[SpendJournal] = []

    async def start(sink: Any, **options: Any) -> SpendJournal:
        journal = SpendJournal(tmp_path / "journal", sink, **options)
        journals.append(journal)
        await journal.start()
        return journal

    yield start
    for journal in journals:
        await journal.aclose()  # a no-op for a closed journal


# --- one process ---------------------------------------------------------------------------


async def test_append_then_flush_puts_records_in_the_sink_and_deletes_the_files(
        tmp_path: Path, make: Any) -> None:
    sink = MemorySink()
    journal = await make(sink, flush_interval=3600)
    batch = records(25)
    for item in batch:
        journal.append(item)
    assert journal.pending == 25
    [active] = files(tmp_path / "journal")
    assert active == f"spend-{os.getpid()}-1.jsonl"
    lines = (tmp_path / "journal" / active).read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == batch  # one line per record, in order

    assert await journal.flush() == 25
    assert sink.records == {item["id"]: item for item in batch}
    assert journal.pending == 0
    assert active not in files(tmp_path / "journal")  # committed segments are deleted
    assert await journal.flush() == 0
    await journal.aclose()


async def test_aclose_drains_everything_and_leaves_no_file(tmp_path: Path, make: Any) -> None:
    sink = MemorySink()
    journal = await make(sink, flush_interval=3600)
    batch = records(7)
    for item in batch[:3]:
        journal.append(item)
    await journal.flush()
    for item in batch[3:]:
        journal.append(item)
    await journal.aclose()
    assert set(sink.records) == {item["id"] for item in batch}
    assert files(tmp_path / "journal") == []
    assert journal.pending == 0


async def test_a_failing_sink_keeps_the_records_and_a_retry_adds_each_once(
        tmp_path: Path, make: Any) -> None:
    sink = MemorySink(failing=[1, 2])
    journal = await make(sink, flush_interval=3600)
    batch = records(5)
    for item in batch:
        journal.append(item)
    with capture_logs() as logs:
        assert await journal.flush() == 0
        assert await journal.flush() == 0
    assert [entry["log_level"] for entry in logs] == ["warning", "warning"]
    assert sink.records == {}
    assert journal.pending == 5
    assert len(files(tmp_path / "journal")) == 2  # the kept segment and the new active one

    assert await journal.flush() == 5
    assert set(sink.records) == {item["id"] for item in batch}
    assert set(sink.offers.values()) == {1}
    assert files(tmp_path / "journal") == [f"spend-{os.getpid()}-2.jsonl"]
    await journal.aclose()


async def test_a_batch_that_failed_midway_offers_only_the_records_not_yet_committed(
        make: Any) -> None:
    sink = MemorySink(failing=[2])
    journal = await make(sink, flush_interval=3600, batch_size=2)
    batch = records(5)
    for item in batch:
        journal.append(item)
    assert await journal.flush() == 2  # the first batch went in, the second failed
    assert journal.pending == 3
    assert await journal.flush() == 3
    assert set(sink.records) == {item["id"] for item in batch}
    assert sink.offers == Counter({item["id"]: 1 for item in batch})  # no batch sent twice
    await journal.aclose()


async def test_batches_join_segments_and_never_exceed_batch_size(make: Any) -> None:
    sink = MemorySink(failing=[1])
    journal = await make(sink, flush_interval=3600, batch_size=4)
    batch = records(6)
    for item in batch[:3]:
        journal.append(item)
    await journal.flush()  # fails: a segment of 3 stays
    for item in batch[3:]:
        journal.append(item)
    assert await journal.flush() == 6
    assert sink.sizes == [4, 2]  # two segments of 3, in batches of at most 4
    assert set(sink.records) == {item["id"] for item in batch}
    await journal.aclose()


async def test_aclose_with_the_sink_down_leaves_segments_that_the_next_start_replays(
        tmp_path: Path, make: Any) -> None:
    down = MemorySink(failing=range(1, 100))
    journal = await make(down, flush_interval=3600)
    batch = records(9)
    for item in batch:
        journal.append(item)
    with capture_logs() as logs:
        await journal.aclose()
    assert any(entry["log_level"] == "error" for entry in logs)
    assert len(files(tmp_path / "journal")) == 1

    sink = MemorySink()
    again = await make(sink, flush_interval=3600)  # the locks were released by aclose
    assert set(sink.records) == {item["id"] for item in batch}
    assert set(sink.offers.values()) == {1}
    await again.aclose()
    assert files(tmp_path / "journal") == []


async def test_the_flusher_runs_every_flush_interval(make: Any) -> None:
    sink = MemorySink()
    journal = await make(sink, flush_interval=0.01)
    batch = records(3)
    for item in batch:
        journal.append(item)
    await eventually(lambda: len(sink.records) == 3, "an interval flush")
    assert journal.pending == 0
    await journal.aclose()


async def test_the_flusher_runs_as_soon_as_batch_size_records_are_pending(make: Any) -> None:
    sink = MemorySink()
    journal = await make(sink, flush_interval=3600, batch_size=10)
    batch = records(10)
    for item in batch[:9]:
        journal.append(item)
    for _ in range(5):
        await asyncio.sleep(0.01)
    assert sink.calls == 0  # below batch_size, with an hour's interval: nothing yet
    journal.append(batch[9])
    await eventually(lambda: len(sink.records) == 10, "a batch_size flush")
    assert sink.calls == 1
    await journal.aclose()


async def test_the_flusher_retries_a_failing_sink_until_it_works(make: Any) -> None:
    sink = MemorySink(failing=[1, 2, 3])
    journal = await make(sink, flush_interval=0.005)
    batch = records(4)
    for item in batch:
        journal.append(item)
    await eventually(lambda: len(sink.records) == 4, "the retried insert")
    assert sink.calls == 4
    assert set(sink.offers.values()) == {1}
    await journal.aclose()


async def test_a_refused_disk_write_keeps_the_record_in_memory_and_writes_it_later(
        tmp_path: Path, make: Any) -> None:
    sink = MemorySink()
    journal = await make(sink, flush_interval=3600)
    batch = records(6)
    journal.append(batch[0])
    active = journal._active
    assert active is not None
    saved, full = os.dup(active.fd), os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, active.fd)  # the segment's descriptor now answers ENOSPC
        with capture_logs() as logs:
            for item in batch[1:4]:
                journal.append(item)  # never raises
        assert [entry["log_level"] for entry in logs] == ["error"]  # logged once
        assert journal.pending == 4
    finally:
        os.dup2(saved, active.fd)
        os.close(saved)
        os.close(full)
    for item in batch[4:]:
        journal.append(item)
    assert await journal.flush() == 6
    assert set(sink.records) == {item["id"] for item in batch}
    await journal.aclose()
    assert files(tmp_path / "journal") == []


async def test_records_the_disk_still_refuses_at_flush_go_to_the_sink_from_memory(
        make: Any) -> None:
    sink = MemorySink()
    journal = await make(sink, flush_interval=3600)
    active = journal._active
    assert active is not None
    batch = records(3)
    saved, full = os.dup(active.fd), os.open("/dev/full", os.O_WRONLY)
    try:
        os.dup2(full, active.fd)
        for item in batch:
            journal.append(item)
        assert await journal.flush() == 3
        assert set(sink.records) == {item["id"] for item in batch}
        assert journal.pending == 0
    finally:
        os.dup2(saved, active.fd)
        os.close(saved)
        os.close(full)
    await journal.aclose()


async def test_values_json_cannot_hold_are_journaled_as_text_and_append_never_raises(
        make: Any) -> None:
    sink = MemorySink()
    journal = await make(sink, flush_interval=3600)
    journal.append({"id": "a", "cost": Decimal("0.25")})
    journal.append({"id": "b", "tokens": 2**70})  # beyond JSON's integers: logged, dropped
    await journal.aclose()
    assert sink.records == {"a": {"id": "a", "cost": "0.25"}}


async def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path, make: Any) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    batch = records(3)
    orphan = directory / "spend-999999-1.jsonl"
    orphan.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in batch)
                       + b'{"id": "torn", "tok')
    sink = MemorySink()
    with capture_logs() as logs:
        journal = await make(sink, flush_interval=3600)
    assert set(sink.records) == {item["id"] for item in batch}
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["lines"] == 1
    assert not orphan.exists()
    await journal.aclose()


async def test_two_live_journals_in_one_directory_never_replay_each_other(
        tmp_path: Path, make: Any) -> None:
    sink_a = MemorySink(failing=[1])
    a = await make(sink_a, flush_interval=3600)
    first = records(4)
    for item in first:
        a.append(item)
    await a.flush()  # fails: a rotated segment a still owns, and its active one
    later = records(2)
    for item in later:
        a.append(item)
    assert len(files(tmp_path / "journal")) == 2

    sink_b = MemorySink()
    b = await make(sink_b, flush_interval=3600)
    b.orphan_scan_interval = 0
    mine = records(3)
    for item in mine:
        b.append(item)
    await b.flush()
    assert b._adopt_orphans() == 0  # what its periodic scan does
    await b.flush()
    assert set(sink_b.records) == {item["id"] for item in mine}  # nothing of a's
    assert len(files(tmp_path / "journal")) == 3

    assert await a.flush() == 6
    assert set(sink_a.records) == {item["id"] for item in first + later}
    await a.aclose()
    await b.aclose()
    assert files(tmp_path / "journal") == []


async def test_a_segment_deleted_after_another_opened_it_is_not_taken_for_an_orphan(
        tmp_path: Path, make: Any) -> None:
    sink = MemorySink()
    journal = await make(sink, flush_interval=3600)
    journal.append(records(1)[0])
    [name] = files(tmp_path / "journal")
    # A scanning process opened the file just before its owner committed and deleted it,
    # and takes the lock only after the owner let go of it.
    fd = os.open(tmp_path / "journal" / name, os.O_RDONLY)
    try:
        assert not lock(fd)  # still held by its owner
        await journal.flush()
        assert not lock(fd)  # free now, but deleted: its records are in the sink already
    finally:
        os.close(fd)


# --- killed processes ----------------------------------------------------------------------


class Child:
    def __init__(self, directory: Path, db: Path, count: int, flushed: int,
                 *extra: str) -> None:
        self.prefix = uuid4().hex[:16]
        self.ids = [f"{self.prefix}{index:08x}" for index in range(count)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.journal_crash", str(directory), str(db),
             str(count), str(flushed), self.prefix, *extra],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)

    async def ready(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 60)
        assert line == "ready\n", "the journal child failed (its stderr is above)"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait() == -signal.SIGKILL

    def segments(self, directory: Path) -> list[str]:
        return [name for name in files(directory)
                if name.startswith(f"spend-{self.process.pid}-")]


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.process.poll() is None:
            child.process.kill()
        child.process.wait()
        if child.process.stdout is not None:
            child.process.stdout.close()


@pytest.mark.parametrize("flushed", [0, 120])
async def test_a_killed_process_is_replayed_exactly_once(
        tmp_path: Path, make: Any, children: list[Child], flushed: int) -> None:
    directory, db = tmp_path / "journal", tmp_path / "spend.db"
    child = Child(directory, db, 300, flushed)
    children.append(child)
    await child.ready()
    sink = SQLiteSink(db)
    assert len(sink.ids()) == flushed

    # While it lives, its segment is its own: a journal starting beside it replays nothing.
    beside = await make(sink, flush_interval=3600)
    assert len(sink.ids()) == flushed
    await beside.aclose()
    assert len(child.segments(directory)) == 1

    child.kill()
    replay = await make(sink, flush_interval=3600)
    assert sink.ids() == sorted(child.ids)  # none lost
    assert set(sink.offers().values()) == {1}  # none offered twice
    assert child.segments(directory) == []
    await replay.aclose()
    assert files(directory) == []


async def test_a_torn_line_in_a_killed_process_segment_does_not_break_its_replay(
        tmp_path: Path, make: Any, children: list[Child]) -> None:
    directory, db = tmp_path / "journal", tmp_path / "spend.db"
    child = Child(directory, db, 50, 0)
    children.append(child)
    await child.ready()
    child.kill()
    [segment] = child.segments(directory)
    with (directory / segment).open("ab") as file:
        file.write(b'{"id":"half-written","request_id":"re')  # as if killed mid-write
    sink = SQLiteSink(db)
    replay = await make(sink, flush_interval=3600)
    assert sink.ids() == sorted(child.ids)
    await replay.aclose()
    assert files(directory) == []


async def test_a_crash_between_insert_and_delete_adds_nothing_twice(
        tmp_path: Path, make: Any, children: list[Child]) -> None:
    directory, db = tmp_path / "journal", tmp_path / "spend.db"
    child = Child(directory, db, 40, 40, "die-after-insert")
    children.append(child)
    assert await asyncio.to_thread(child.process.wait) == -signal.SIGKILL
    sink = SQLiteSink(db)
    assert sink.ids() == sorted(child.ids)  # inserted, but its segment was never deleted
    assert len(child.segments(directory)) == 2

    replay = await make(sink, flush_interval=3600)
    assert sink.ids() == sorted(child.ids)  # the replay offered them again, the sink skipped
    assert set(sink.offers().values()) == {2}
    assert child.segments(directory) == []
    await replay.aclose()


async def test_a_live_journal_adopts_a_dead_process_segments_on_its_scan(
        tmp_path: Path, children: list[Child]) -> None:
    directory, db = tmp_path / "journal", tmp_path / "spend.db"
    child = Child(directory, db, 30, 10)
    children.append(child)
    await child.ready()
    sink = SQLiteSink(db)
    journal = SpendJournal(directory, sink, flush_interval=0.01)
    journal.orphan_scan_interval = 0.01
    await journal.start()
    try:
        assert len(sink.ids()) == 10
        child.kill()
        await eventually(lambda: len(sink.ids()) == 30, "the dead process's records")
        assert sink.ids() == sorted(child.ids)
        assert set(sink.offers().values()) == {1}
    finally:
        await journal.aclose()
    assert files(directory) == []

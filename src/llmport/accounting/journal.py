"""The spend journal: spend records go to a local file first, to the database in batches.

Every request leaves one spend record, and writing it to the database on the
request path would put the database's latency, and its outages, into every
request. So ``append`` writes one JSON line to this process's active segment
file with a plain ``os.write``; there is no fsync, because the page cache
survives a process kill: a ``kill -9`` loses nothing that ``append`` wrote.
A background flusher rotates the active segment, inserts the closed
segments' records into the sink in batches and deletes a segment once all its
records are committed. If the sink fails, the segments stay and the flusher
retries with backoff; if the disk fails, records wait in memory and go
straight to the sink at the next flush.

Ownership across processes. Workers may share one directory. A segment
(``spend-<pid>-<seq>.jsonl``; the pid is for people, the lock decides) is held
under an exclusive ``flock`` by its writer from its creation until it is
deleted, closed segments included: the lock lives on the open file, which
stays open until after the unlink. A segment whose lock can be taken without
waiting belongs to a dead process: ``start`` and a periodic scan adopt such
orphans, keeping the lock, so no other process can adopt them too, and insert
them like their own. Whoever takes a lock then checks that the file still has
a name, because its holder may have deleted it between the other's ``open``
and ``flock``.

Exactly once. The journal writes each line once, and remembers how many
records of a segment were committed, so a retry offers only the rest. A crash
between an insert and the unlink replays that batch; the sink skips ids it
already has, so the database still holds each record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
import structlog

from llmport.accounting.journal_segments import SEGMENT_NAME, Segment, lock, read_records

MAX_BACKOFF = 30.0  # seconds between retries of a failing sink, at most
ORPHAN_SCAN_INTERVAL = 10.0  # seconds between scans for dead processes' segments
_DUMPS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


class SpendSink(Protocol):
    async def insert_spend(self, records: Sequence[dict[str, Any]]) -> int:
        """Insert ``records``, skipping ids already present; how many were new."""
        ...


def _log() -> Any:
    # Journal logs are rare; a fresh proxy honours the current structlog configuration even
    # where loggers are cached on first use (so tests can capture them).
    return structlog.get_logger("llmport.journal")


class SpendJournal:
    """Spend records appended to local segment files, flushed to a ``SpendSink`` in batches."""

    def __init__(self, directory: str | os.PathLike[str], sink: SpendSink, *,
                 flush_interval: float = 0.5, batch_size: int = 1000) -> None:
        if flush_interval <= 0 or batch_size < 1:
            raise ValueError("flush_interval must be > 0 and batch_size >= 1")
        self.directory = Path(directory)
        self.sink = sink
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.orphan_scan_interval = ORPHAN_SCAN_INTERVAL
        self._active: Segment | None = None
        self._closed: list[Segment] = []  # rotated or adopted, locked until deleted
        self._unwritten: list[bytes] = []  # lines the disk refused, oldest first
        self._write_failing = False
        self._pid = os.getpid()
        self._seq = 0
        self._lock = asyncio.Lock()  # one rotation or commit at a time
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._inserted = 0
        self._failures = 0
        self._retry_at = 0.0

    @property
    def pending(self) -> int:
        """Records appended but not yet committed (an adopted segment's count once read)."""
        active = self._active.records if self._active is not None else 0
        closed = sum(segment.records - segment.committed for segment in self._closed)
        return active + closed + len(self._unwritten)

    def append(self, record: dict[str, Any]) -> None:
        """One line to the active segment; never raises (a refused line waits in memory)."""
        try:
            line = orjson.dumps(record, default=str, option=_DUMPS)
        except orjson.JSONEncodeError:
            _log().exception("spend record cannot be serialised; dropped",
                             record=repr(record)[:500])
            return
        active = self._active
        if active is None or self._unwritten:
            self._unwritten.append(line)  # behind earlier refused lines, to keep their order
            if len(self._unwritten) % self.batch_size == 0:
                self._wake.set()
            return
        try:
            self._write(active, line)
        except OSError as exc:
            self._unwritten.append(line)
            self._write_failed(exc)
            return
        if active.records == self.batch_size:
            self._wake.set()

    async def start(self) -> None:
        """Adopt and replay orphaned segments, open the active one, start the flusher."""
        if self._started:
            return
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._pid = os.getpid()
        self._stopping = False
        async with self._lock:
            adopted = self._adopt_orphans()
            self._active = self._open_segment()
            self._started = True
            self._write_unwritten()
            if adopted:
                inserted = await self._commit()
                _log().info("spend journal replayed orphaned segments", segments=adopted,
                            inserted=inserted, pending=self.pending)
        self._task = asyncio.create_task(self._run(), name="spend-journal-flusher")

    async def flush(self) -> int:
        """Rotate and insert every closed segment; the number of records the sink took as new.

        A failing sink is logged and leaves its segments for the next flush; it never raises.
        """
        if not self._started:
            return 0
        async with self._lock:
            self._write_unwritten()
            self._rotate()
            return await self._commit()

    async def aclose(self) -> None:
        """Stop the flusher and flush everything; no journal file is left on success."""
        task, self._task = self._task, None
        if task is not None and not task.done():  # (a flusher whose loop ended is done)
            self._stopping = True
            self._wake.set()
            await task
        if not self._started:
            return
        async with self._lock:
            self._write_unwritten()
            self._rotate(reopen=False)
            await self._commit()
            self._started = False
            left, lost = self._closed, len(self._unwritten)
            for segment in left:
                os.close(segment.fd)  # unlocked: the next process to start replays it
            if left or lost:
                _log().error("spend journal closed with records not in the database",
                             segments_left=len(left), lost=lost, directory=str(self.directory))
            self._closed, self._unwritten = [], []

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_scan = loop.time() + self.orphan_scan_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            self._wake.clear()
            if self._stopping:
                return
            try:
                async with self._lock:
                    self._write_unwritten()
                    self._rotate()
                    if loop.time() >= next_scan:
                        next_scan = loop.time() + self.orphan_scan_interval
                        self._adopt_orphans()
                    if loop.time() >= self._retry_at:
                        await self._commit()
            except Exception:
                _log().exception("spend journal flush failed")

    def _write(self, segment: Segment, line: bytes) -> None:
        if segment.torn:
            line = b"\n" + line  # end the partial line left by a failed write
        written = os.write(segment.fd, line)
        if written < len(line):
            try:
                os.ftruncate(segment.fd, segment.size)  # cuts off any earlier partial line too
            except OSError:
                segment.torn = True
            else:
                segment.torn = False
            raise OSError(errno.ENOSPC, "short write to the spend journal")
        segment.size += written
        segment.torn = False
        segment.records += 1

    def _write_failed(self, exc: OSError) -> None:
        if not self._write_failing:
            self._write_failing = True
            _log().error("spend journal write failed; records kept in memory until it works",
                         error=str(exc), directory=str(self.directory))

    def _write_unwritten(self) -> None:
        """Retry the lines the disk refused, into the active segment."""
        if not self._unwritten or self._active is None:
            return
        written = 0
        try:
            for line in self._unwritten:
                self._write(self._active, line)
                written += 1
        except OSError as exc:
            self._write_failed(exc)
        finally:
            del self._unwritten[:written]
        if not self._unwritten and self._write_failing:
            self._write_failing = False
            _log().info("spend journal writes work again", records=written)

    def _open_segment(self) -> Segment:
        for _ in range(1000):
            self._seq += 1
            path = self.directory / f"spend-{self._pid}-{self._seq}.jsonl"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            except FileExistsError:  # a dead process with the same pid left it
                continue
            if lock(fd):
                return Segment(path, fd)
            # Another process's scan took it for an orphan before we locked it; it deletes it.
            os.close(fd)
        raise OSError(errno.EEXIST, f"no free segment name in {self.directory}")

    def _rotate(self, *, reopen: bool = True) -> None:
        """Close the active segment for committing and, unless closing, open a new one."""
        old = self._active
        if old is None and not reopen:
            return
        if old is not None and reopen and old.records == 0 and not old.torn:
            return
        new: Segment | None = None
        if reopen:
            try:
                new = self._open_segment()
            except OSError as exc:
                _log().error("spend journal cannot open a new segment", error=str(exc))
                if old is not None:
                    return  # keep writing to the old one
        self._active = new
        if old is not None:
            self._closed.append(old)

    def _adopt_orphans(self) -> int:
        """Lock and take over the segments of dead processes; how many."""
        own = {segment.path.name for segment in self._closed}
        if self._active is not None:
            own.add(self._active.path.name)
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            _log().error("spend journal cannot list its directory", error=str(exc))
            return 0
        adopted = 0
        for name in names:
            if name in own or not SEGMENT_NAME.fullmatch(name):
                continue
            path = self.directory / name
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # its owner just committed and deleted it
            except OSError as exc:
                _log().warning("spend journal cannot open a segment", path=str(path),
                               error=str(exc))
                continue
            if lock(fd):
                self._closed.append(Segment(path, fd))
                adopted += 1
            else:
                os.close(fd)
        return adopted

    async def _commit(self) -> int:
        """Insert the closed segments and the refused lines; never raises for a sink failure."""
        before = self._inserted
        try:
            await self._commit_segments()
            await self._commit_unwritten()
        except Exception as exc:
            self._failures += 1
            delay = min(MAX_BACKOFF, 2 * self.flush_interval * 2 ** (self._failures - 1))
            self._retry_at = asyncio.get_running_loop().time() + delay
            _log().warning("spend sink failed; records kept for a retry", error=repr(exc),
                           failures=self._failures, retry_in_s=delay, pending=self.pending)
        else:
            if self._failures:
                _log().info("spend sink works again", failures=self._failures)
            self._failures = 0
            self._retry_at = 0.0
        return self._inserted - before

    async def _commit_segments(self) -> None:
        batch: list[dict[str, Any]] = []
        parts: list[tuple[Segment, int]] = []  # how many of each segment's records are in batch
        for segment in list(self._closed):
            records, unreadable = await asyncio.to_thread(read_records, segment.fd)
            if unreadable and not segment.warned:
                segment.warned = True
                _log().warning("spend journal skipped unreadable lines (a torn write)",
                               path=str(segment.path), lines=unreadable)
            segment.records = len(records)
            start = segment.committed
            while start < len(records):
                take = records[start:start + self.batch_size - len(batch)]
                batch.extend(take)
                parts.append((segment, len(take)))
                start += len(take)
                if len(batch) >= self.batch_size:
                    await self._insert(batch, parts)
                    batch, parts = [], []
            if segment.committed >= segment.records:
                self._delete(segment)  # nothing of it waits in the batch
        if batch:
            await self._insert(batch, parts)

    async def _insert(self, batch: list[dict[str, Any]], parts: list[tuple[Segment, int]]) -> None:
        self._inserted += await self.sink.insert_spend(batch)
        for segment, count in parts:
            segment.committed += count
        for segment in dict.fromkeys(segment for segment, _ in parts):
            if segment.committed >= segment.records:
                self._delete(segment)

    async def _commit_unwritten(self) -> None:
        """Lines the disk still refuses go to the sink from memory."""
        while self._unwritten:
            lines = self._unwritten[:self.batch_size]
            self._inserted += await self.sink.insert_spend([orjson.loads(line) for line in lines])
            del self._unwritten[:len(lines)]

    def _delete(self, segment: Segment) -> None:
        if segment not in self._closed:
            return  # already deleted by the insert that committed its last records
        try:
            os.unlink(segment.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            # Keep it (and its lock): the next flush tries again; a replay would only re-offer.
            _log().warning("spend journal cannot delete a committed segment",
                           path=str(segment.path), error=str(exc))
            return
        os.close(segment.fd)  # after the unlink, so nobody can lock it while it has a name
        self._closed.remove(segment)

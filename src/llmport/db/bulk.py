"""The spend log's bulk insert, written for the driver rather than through the ORM.

Every request leaves one spend row, so the insert runs as often as requests do; through
SQLAlchemy's executemany-with-RETURNING each row cost more CPU than the request it
records (about 250,000 instructions, a third of a bare proxied request). Here the rows
become plain tuples, converted by the same bind processors SQLAlchemy would use (so the
stored text of a SQLite timestamp is exactly what the ORM reads back), and go to the
database in one driver call: an executemany on SQLite, one ``unnest`` INSERT on
PostgreSQL. Both skip ids already present and count only the new rows.

On a SQLite file the executemany does not go through aiosqlite (``SQLiteSpendWriter``).
"""

from __future__ import annotations

import asyncio
import math
import operator
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Boolean
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from llmport.db import models
from llmport.db.models import SpendLog

_second: tuple[float, str] = (math.nan, "")  # the last second sqlite_time formatted


def sqlite_time(epoch: float) -> str:
    """Epoch seconds as SQLAlchemy stores a UTC datetime in SQLite (naive, to the
    microsecond): ``datetime.fromtimestamp(epoch, UTC)``'s fields, rounded as it rounds them
    (half to even, carried into the second), with the text up to the second kept from the
    previous call (a second's records share it)."""
    global _second
    fraction, whole = math.modf(epoch)
    micro = round(fraction * 1e6)
    if micro >= 1_000_000:
        whole, micro = whole + 1, micro - 1_000_000
    elif micro < 0:  # before 1970
        whole, micro = whole - 1, micro + 1_000_000
    second, text = _second
    if whole != second:
        year, month, day, hour, minute, sec = time.gmtime(whole)[:6]
        text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{sec:02d}"
        _second = (whole, text)
    return f"{text}.{micro:06d}"


class SpendInsert:
    def __init__(self, dialect: Dialect) -> None:
        columns = list(SpendLog.__table__.columns)
        self._names = tuple(column.key for column in columns)
        self._pick = operator.itemgetter(*self._names)
        processors = (column.type.dialect_impl(dialect).bind_processor(dialect)
                      for column in columns)
        self._processors: tuple[tuple[int, Callable[[Any], Any]], ...] = tuple(
            (index, process) for index, process in enumerate(processors) if process is not None)
        names = ", ".join(self._names)
        self._postgres = dialect.name == "postgresql"
        # record_values' shortcut: SQLite's storage of the two column types it handles.
        self._columns = frozenset(self._names)
        self._created = self._names.index("created_at")
        self._flags = tuple(index for index, column in enumerate(columns)
                            if isinstance(column.type, Boolean))
        self._others = tuple((index, process) for index, process in self._processors
                             if index != self._created and index not in self._flags)
        self._sqlite_shortcut = dialect.name == "sqlite" and isinstance(
            columns[self._created].type, models.UTCDateTime)
        if self._postgres:
            # One statement whatever the batch size: one array parameter per column.
            arrays = ", ".join(f"${index}::{column.type.compile(dialect=dialect)}[]"
                               for index, column in enumerate(columns, start=1))
            self._sql = (f"WITH new AS (INSERT INTO spend_log ({names}) "
                         f"SELECT * FROM unnest({arrays}) ON CONFLICT (id) DO NOTHING "
                         f"RETURNING 1) SELECT count(*) FROM new")
        else:
            marks = ", ".join("?" * len(columns))
            self._sql = (f"INSERT INTO spend_log ({names}) VALUES ({marks}) "
                         f"ON CONFLICT (id) DO NOTHING")

    @property
    def sql(self) -> str:
        return self._sql

    def record_values(self, record: dict[str, Any]) -> tuple[Any, ...]:
        """``values(spend_row(record))``, with a shortcut for the journal's records on SQLite.

        The journal writes every record alike: known fields, ``created_at`` in epoch seconds
        and ``True``/``False`` flags. Those become the driver's tuple directly (about 2 µs
        instead of 7: no validation pass, no aware datetime, no Python bind processors for
        the time and the flags); the stored text is what the processors would have made.
        Anything else (another type, an unknown or a missing field) takes the general path,
        which converts or refuses it as before.
        """
        created = record.get("created_at")
        if created.__class__ is float and self._sqlite_shortcut \
                and record.keys() <= self._columns:
            try:
                values = list(self._pick({**models.SPEND_DEFAULTS, **record}))
            except KeyError:  # a required field is missing: the general path says which
                pass
            else:
                for index in self._flags:
                    flag = values[index]
                    if flag.__class__ is not bool:
                        break
                    values[index] = 1 if flag else 0
                else:
                    values[self._created] = sqlite_time(created)
                    for index, process in self._others:  # (to_float: C, cheap)
                        values[index] = process(values[index])
                    return tuple(values)
        return self.values(models.spend_row(record))

    def values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        """A complete row as the driver's parameters."""
        values = list(self._pick(row))
        for index, process in self._processors:
            values[index] = process(values[index])
        return tuple(values)

    async def run(self, connection: AsyncConnection, rows: Sequence[dict[str, Any]]) -> int:
        """Insert complete rows (``spend_row``'s) in the connection's transaction; how many
        were new."""
        values = [self.values(row) for row in rows]
        if self._postgres:
            columns = tuple(list(column) for column in zip(*values, strict=True))
            return int((await connection.exec_driver_sql(self._sql, columns)).scalar_one())
        # sqlite3 sums the changes of every row of an executemany: conflicts count none.
        return (await connection.exec_driver_sql(self._sql, values)).rowcount


class SQLiteSpendWriter:
    """The spend insert on a SQLite file, all on the event loop's thread, in time slices.

    Why not through aiosqlite, like every other query: its thread binds each row's parameters,
    so it takes the GIL back from the event loop once a row, and under load the two threads
    handed the GIL to each other about once a row, each handover a wake-up and a wait.
    Measured at ~5,000 requests/s: the commits cost 43 µs of CPU a request that way, 15 µs
    this way. Here sqlite3 lets go of the GIL only inside each row's step, on the loop's own
    thread. No statement goes to a worker thread either: under load each hop there and back
    waits for turns of the loop (~25 ms each at 256 connections: BEGIN and COMMIT in a thread
    took 120 ms apiece, and the spend log fell behind).

    * ``BEGIN IMMEDIATE`` is tried without a busy timeout; while another process writes, it
      is tried again after growing pauses (1 to 50 ms), up to the busy timeout.
    * ``COMMIT`` in WAL mode with ``synchronous = NORMAL`` appends to the WAL and syncs
      nothing; this connection does not checkpoint on commit (``wal_autocheckpoint = 0``):
      a passive checkpoint runs in a worker thread, on a connection of its own, at most once
      every ``CHECKPOINT_INTERVAL_S`` after a commit, so the WAL cannot grow without end.
    * The rows are bound a few at a time (``CHUNK``), and the writer lets the loop serve
      requests once its slice of the turn is used: at least ``SLICE_S``, and ``SHARE`` of
      the time the loop spent on everything else since the writer's last turn. A fixed slice
      was not enough: at 64 connections a turn of the loop took ~13 ms, and 32 rows a turn
      fell behind the ~5,000 rows a second the requests made (the journal's backlog, and the
      memory holding it, grew without end). With the share it keeps up with about SHARE /
      (cost of a row, ~10 µs) = 15,000 rows a second whatever the load, and holds a turn up
      by SHARE of that turn's length at most.

    One transaction at a time (a lock); an insert cancelled or failing part-way rolls its
    transaction back, so none of its rows is kept.
    """

    CHUNK = 16
    SLICE_S = 0.0005
    SHARE = 0.15
    CHECKPOINT_INTERVAL_S = 1.0

    def __init__(self, path: str, insert: SpendInsert, busy_timeout_ms: int,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._path = path
        self._clock = clock
        self._insert = insert
        self._busy_timeout_s = busy_timeout_ms / 1000
        self._connection: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpoint_due = 0.0

    async def insert(self, records: Sequence[dict[str, Any]]) -> int:
        """Insert spend records (as ``spend_row`` takes them) in one transaction; how many were
        new. Each chunk's records become rows just before they are bound, inside the time
        slices: converted all at once, a 1,000-record batch held the loop for ~4 ms."""
        to_values = self._insert.record_values
        async with self._lock:
            if self._connection is None:
                self._connection = await asyncio.to_thread(self._connect)
            connection = self._connection
            await self._begin(connection)
            try:
                added = 0
                clock, slice_s = self._clock, self.SLICE_S
                turn = clock()
                for start in range(0, len(records), self.CHUNK):
                    if clock() - turn >= slice_s:  # this turn's slice is used
                        before = clock()
                        await asyncio.sleep(0)  # let the loop serve requests
                        turn = clock()
                        slice_s = max(self.SLICE_S, (turn - before) * self.SHARE)
                    # sqlite3 sums the changes of every row of an executemany: conflicts none.
                    values = [to_values(record) for record in records[start:start + self.CHUNK]]
                    added += connection.executemany(self._insert.sql, values).rowcount
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            self._maybe_checkpoint()
            return added

    async def close(self) -> None:
        async with self._lock:
            if self._checkpoint is not None:
                await asyncio.wait([self._checkpoint])
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    async def _begin(self, connection: sqlite3.Connection) -> None:
        deadline = time.monotonic() + self._busy_timeout_s
        pause = 0.001
        while True:
            try:
                connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(pause)  # another process writes: wait without blocking
            pause = min(pause * 2, 0.05)

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        if now < self._checkpoint_due or (self._checkpoint and not self._checkpoint.done()):
            return
        self._checkpoint_due = now + self.CHECKPOINT_INTERVAL_S
        self._checkpoint = asyncio.ensure_future(asyncio.to_thread(self._checkpoint_wal))

    def _checkpoint_wal(self) -> None:
        """A passive checkpoint: copies what no reader still needs, waits for nobody."""
        try:
            connection = sqlite3.connect(self._path, timeout=self._busy_timeout_s)
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                connection.close()
        except sqlite3.Error:  # the next commit's checkpoint tries again
            pass

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False,
                                     timeout=self._busy_timeout_s)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA wal_autocheckpoint = 0")
        connection.execute("PRAGMA busy_timeout = 0")  # BEGIN waits in _begin, not here
        return connection

"""Running the Alembic migrations shipped in this directory, without any alembic.ini.

``upgrade`` brings a database to head. PostgreSQL and SQLite files migrate in a worker
thread, where ``env.py`` opens its own async engine (a thread has no loop to share);
a memory SQLite database exists only inside its engine's one connection, so it migrates
on that. Concurrent upgrades wait for each other: across processes, ``env.py`` takes a
PostgreSQL advisory lock and a SQLite file is guarded by a file lock next to it
(``<file>.migrate-lock``); within a process a thread lock, because Alembic keeps the
running migration in module globals (``alembic.context``, ``alembic.op``).

A database already at ``HEAD`` (every start but the first) is not handed to Alembic at
all: one query says so, and the worker never loads Alembic, Mako and Pygments (about
12 MB it would keep for its whole life).
"""

from __future__ import annotations

import asyncio
import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).parent
HEAD = "0009"  # the newest revision in versions/ (a test checks that they agree)
_RUNNING = threading.Lock()


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # Alembic loads only when a database migrates

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["url"] = url
    return config


async def upgrade(url: str, engine: AsyncEngine) -> None:
    if await _at_head(engine):
        return
    config = alembic_config(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        await asyncio.to_thread(_upgrade, config)
    elif not parsed.database or parsed.database == ":memory:":
        # A thread lock, polled: blocking would stall the loop, which the holder may need.
        while not _RUNNING.acquire(blocking=False):  # noqa: ASYNC110 (no Event to wait on)
            await asyncio.sleep(0.01)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(_upgrade_on, config)
        finally:
            _RUNNING.release()
    else:
        await asyncio.to_thread(_upgrade_file, config, Path(parsed.database))


async def _at_head(engine: AsyncEngine) -> bool:
    try:
        async with engine.connect() as connection:
            versions = (await connection.exec_driver_sql(
                "SELECT version_num FROM alembic_version")).scalars().all()
    except Exception:  # no such table yet (a new database): Alembic creates it
        return False
    return list(versions) == [HEAD]


def _upgrade(config: Config) -> None:
    from alembic import command

    with _RUNNING:
        command.upgrade(config, "head")


def _upgrade_on(connection: Connection, config: Config) -> None:
    from alembic import command

    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _upgrade_file(config: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.with_name(path.name + ".migrate-lock")):
        _upgrade(config)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # flock, not lockf: it also excludes a second upgrade from the same process.
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

"""Real PostgreSQL databases and Redis prefixes for tests, created fresh and removed after.

PostgreSQL: a uniquely named database on 127.0.0.1:5432 (user ``postgres``, else
``root``, trust auth), dropped afterwards with its connections terminated first,
so a test never sees another's rows and a killed process cannot keep it alive.
Redis: a unique key prefix, whose keys are deleted with SCAN + DEL afterwards
(never FLUSHDB: other tests and people share the server). When either service is
unreachable, the test is skipped with a loud reason, never failed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import uuid4

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis

PG_HOST = os.environ.get("LLMPORT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LLMPORT_TEST_PG_PORT", "5432"))
PG_USERS = ("postgres", "root")
REDIS_URL = os.environ.get("LLMPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

_pg_user: str | None = None
_pg_problem: str | None = None
_redis_problem: str | None = None
_redis_checked = False


async def _connect(user: str, database: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=database,
                                 timeout=3)


async def _find_user() -> tuple[str | None, str]:
    problems = []
    for user in PG_USERS:
        try:
            connection = await _connect(user)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            problems.append(f"{user}: {type(exc).__name__}: {exc}")
            continue
        await connection.close()
        return user, ""
    return None, "; ".join(problems)


def postgres_user_or_skip() -> str:
    """The user that can connect (checked once per session); skips loudly if none can."""
    global _pg_user, _pg_problem
    if _pg_user is None and _pg_problem is None:
        user, problem = asyncio.run(_find_user())
        _pg_user, _pg_problem = user, (problem if user is None else None)
    if _pg_user is None:
        pytest.skip(f"POSTGRESQL UNREACHABLE at {PG_HOST}:{PG_PORT} as {' or '.join(PG_USERS)} "
                    f"({_pg_problem}): these PostgreSQL tests did not run")
    return _pg_user


def postgres_url(user: str, database: str) -> str:
    return f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{database}"


async def _create(user: str, name: str) -> None:
    connection = await _connect(user)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


async def _drop(user: str, name: str) -> None:
    connection = await _connect(user)
    try:
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()", name)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await connection.close()


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty, uniquely named database; yields its SQLAlchemy URL; dropped afterwards."""
    user = postgres_user_or_skip()
    name = f"llmport_test_{uuid4().hex[:16]}"
    asyncio.run(_create(user, name))
    try:
        yield postgres_url(user, name)
    finally:
        asyncio.run(_drop(user, name))


def postgres_query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on the database behind ``url`` (as built by ``fresh_postgres``)."""
    user, _, rest = url.removeprefix("postgresql+asyncpg://").partition("@")
    database = rest.rsplit("/", 1)[1]

    async def run() -> list[asyncpg.Record]:
        connection = await _connect(user, database)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    return asyncio.run(run())


def redis_or_skip() -> None:
    """Skip (loudly) when no Redis answers at REDIS_URL (checked once per session)."""
    global _redis_checked, _redis_problem
    if not _redis_checked:
        _redis_checked = True
        try:
            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
            try:
                client.ping()
            finally:
                client.close()
        except redis.RedisError as exc:
            _redis_problem = f"{type(exc).__name__}: {exc}"
    if _redis_problem is not None:
        pytest.skip(f"REDIS UNREACHABLE at {REDIS_URL} ({_redis_problem}): these Redis tests "
                    "did not run (start Redis or set LLMPORT_TEST_REDIS_URL)")


def delete_prefixed(prefix: str) -> int:
    """Delete every key under ``prefix`` (SCAN + DEL); how many there were."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
        return len(keys)
    finally:
        client.close()


@contextmanager
def database_config(backend: str) -> Iterator[dict[str, str]]:
    """The config entries that put a gateway on ``backend``: none for the embedded SQLite file
    (``"sqlite"``), ``database_url`` of a fresh PostgreSQL database (dropped afterwards)."""
    if backend == "sqlite":
        yield {}
        return
    with fresh_postgres() as url:
        yield {"database_url": url}


@contextmanager
def redis_prefix() -> Iterator[str]:
    """A unique ``redis_prefix`` for one test (or module); its keys are deleted afterwards."""
    redis_or_skip()
    prefix = f"llmport-test:{uuid4().hex}:"
    try:
        yield prefix
    finally:
        delete_prefixed(prefix)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database's URL (``postgresql+asyncpg://…``), dropped afterwards."""
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def shared_redis_prefix() -> Iterator[str]:
    """A unique Redis key prefix; skips when Redis is unreachable; keys deleted afterwards."""
    with redis_prefix() as prefix:
        yield prefix

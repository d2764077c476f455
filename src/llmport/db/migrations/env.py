"""Alembic's entry point: runs the migrations on an async engine, serialised.

``Database.upgrade`` builds the config in code and passes the URL (or, for a memory
SQLite database, its one open connection) in ``config.attributes``. On PostgreSQL a
transaction-scoped advisory lock makes concurrent upgrades from several processes wait
for each other; the version is read after the lock, so the later ones find head and do
nothing. SQLite upgrades are serialised by a file lock in ``Database.upgrade``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from llmport.db.database import configure_sqlite
from llmport.db.models import Base

MIGRATION_LOCK = 7_415_063_291  # any constant bigint, the same in every process

config = context.config


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_server_default=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    if engine.dialect.name == "sqlite":
        # Foreign keys off: SQLite's batch migrations recreate tables, and a cascade
        # would fire on the drop.
        configure_sqlite(engine, foreign_keys=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("llmport migrations run online only")
if (given := config.attributes.get("connection")) is not None:
    run_migrations(given)
else:
    asyncio.run(run_async_migrations(config.attributes["url"]))

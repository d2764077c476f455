#!/usr/bin/env python3
"""Prepare a full-featured benchmark configuration: its database, and the tenant key the load
generator sends (``sk-llmport-bench``), with limits high enough never to refuse it.

    bench/setup_full.py full          # configs/full-inprocess.yaml (SQLite)
    bench/setup_full.py full-redis    # configs/full-redis.yaml (PostgreSQL + Redis)
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from llmport.config import load_config
from llmport.db.database import Database
from llmport.tenancy.keys import hash_key

HERE = Path(__file__).resolve().parent
CONFIGS = {"full": "full-inprocess.yaml", "full-redis": "full-redis.yaml"}
KEY = "sk-llmport-bench"
LIMITS = {"rpm_limit": 100_000_000, "tpm_limit": 2_000_000_000, "max_parallel_requests": 100_000,
          "max_budget": 1_000_000.0, "budget_period": "monthly"}


async def create_postgres_database(url: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    target = make_url(url)
    conn = await asyncpg.connect(user=target.username or "postgres", host=target.host or
                                 "127.0.0.1", port=target.port or 5432, database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1",
                                     target.database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{target.database}"')
    finally:
        await conn.close()


async def clear_redis(url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        async for name in client.scan_iter(match=prefix + "*", count=1000):
            await client.delete(name)
    finally:
        await client.aclose()


async def main(mode: str) -> None:
    os.environ.setdefault("UPSTREAM_BASE", "http://127.0.0.1:1/v1")
    config = load_config(HERE / "configs" / CONFIGS[mode])
    await asyncio.to_thread(Path(config.data_dir).mkdir, parents=True, exist_ok=True)
    if config.database_url and config.database_url.startswith("postgresql"):
        await create_postgres_database(config.database_url)
    if config.redis_url:
        await clear_redis(config.redis_url, config.redis_prefix)
    db = Database(config.database_location)
    try:
        await db.upgrade()
        for key in await db.list("keys", limit=1000):
            if key.key_hash == hash_key(KEY):
                await db.delete("keys", key.id)
        org = await db.create("orgs", {"name": "bench", **LIMITS})
        team = await db.create("teams", {"name": "bench", "org_id": org.id, **LIMITS})
        await db.create("keys", {"name": "bench", "key_hash": hash_key(KEY), "prefix": KEY[:12],
                                 "org_id": org.id, "team_id": team.id, **LIMITS})
    finally:
        await db.aclose()
    print(f"[setup_full] {mode}: key {KEY[:12]}… in {config.database_location}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

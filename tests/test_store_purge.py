"""Vector stores' expiry purge on both databases: a store goes once ``expires_after`` days
have passed since its last activity (or its creation), and no sooner."""

from __future__ import annotations

from datetime import timedelta

from llmport.db import Database
from llmport.db.job_models import VectorStore
from llmport.db.jobs import now
from llmport.db.rag import RagTables
from tests.test_db import db, migrated_url, new_database  # noqa: F401 (fixtures)


async def test_only_stores_past_their_expiry_are_purged(db: Database) -> None:  # noqa: F811
    tables = RagTables(db.sessions)
    at = now()
    stores = {  # name: (days since the last activity, None = never active, expires_days)
        "idle-3d-of-1": (3, 1), "idle-2h-of-1": (2 / 24, 1), "idle-2d-of-3": (2, 3),
        "idle-4d-of-3": (4, 3), "never-active-2d-of-1": (None, 1), "no-expiry-9d": (9, None)}
    for name, (idle_days, expires) in stores.items():
        created = at - timedelta(days=2 if idle_days is None else idle_days + 1)
        await tables.create_store(VectorStore(
            id=f"vs_{name}", owner="me", name=name, embedding_model="m", revision=0,
            usage_bytes=0, created_at=created, expires_days=expires,
            last_active_at=None if idle_days is None else at - timedelta(days=idle_days)), [])

    assert await tables.purge_expired_stores() == 3
    left = {name for name in stores if await tables.get_store("me", f"vs_{name}") is not None}
    assert left == {"idle-2h-of-1", "idle-2d-of-3", "no-expiry-9d"}

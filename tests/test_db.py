"""Persistence on both databases: migrations, tenant CRUD, principals, the spend log, reports.

Every test runs on SQLite (a file in a temporary directory) and on PostgreSQL (a database
created for this module on 127.0.0.1:5432, dropped at the end; skipped, loudly, when no
server answers). Tests share one migrated database per backend and empty it first.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import IntegrityError

from llmport.db import ApiKey, Base, Database, migrations
from llmport.tenancy.keys import hash_key

PG_HOST = os.environ.get("LLMPORT_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("LLMPORT_TEST_PG_PORT", "5432"))
TABLES = ("spend_log", "api_keys", "users", "teams", "organizations", "files", "file_contents",
          "batches", "batch_items", "vector_stores", "vector_store_files",
          "vector_store_file_batches", "vector_chunks", "responses", "conversations",
          "conversation_items")
BACKENDS = ["sqlite", "postgresql"]
T0 = datetime(2025, 3, 1, 22, 0, tzinfo=UTC)


# databases


async def _pg_admin() -> tuple[asyncpg.Connection, str]:
    errors = []
    for user in ("postgres", "root"):
        try:
            return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user,
                                         database="postgres", timeout=5), user
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            errors.append(f"{user}: {exc!r}")
    pytest.skip(f"PostgreSQL NOT REACHABLE at {PG_HOST}:{PG_PORT} ({'; '.join(errors)}): "
                "the PostgreSQL half of tests/test_db.py is SKIPPED")


async def _pg_create() -> str:
    admin, user = await _pg_admin()
    name = f"llmport_test_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{name}"


async def _pg_drop(url: str) -> None:
    admin, _ = await _pg_admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def new_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """Makes an empty database of a backend and returns its URL; drops them all at the end."""
    made: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'llmport.db'}"
        else:
            url = asyncio.run(_pg_create())
        made.append(url)
        return url

    yield make
    for url in made:
        if url.startswith("postgresql"):
            asyncio.run(_pg_drop(url))


@pytest.fixture(scope="module", params=BACKENDS)
def migrated_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    url = new_database(request.param)

    async def migrate() -> None:
        database = Database(url)
        await database.upgrade()
        await database.aclose()

    asyncio.run(migrate())
    return url


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


@pytest.fixture
async def db(migrated_url: str) -> AsyncIterator[Database]:
    database = Database(migrated_url)
    async with database.engine.begin() as connection:
        for table in TABLES:
            await connection.execute(text(f"DELETE FROM {table}"))
    yield database
    await database.aclose()


# helpers


def record(**fields: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "request_id": f"req-{uuid.uuid4().hex[:8]}",
            "created_at": T0, "key_id": "key_a", "user_id": "user_a", "team_id": "team_a",
            "org_id": "org_a", "principal_kind": "key", "endpoint": "/v1/chat/completions",
            "model": "gpt-4o", "served_model": None, "deployment": "d1", "stream": False,
            "status": 200, "error_type": None, "prompt_tokens": 10, "completion_tokens": 5,
            "cached_tokens": 0, "cost": 1.0, "latency_ms": 12.5, "ttft_ms": None,
            "cache_hit": False, "attempts": 1, **fields}


def totals(requests: int, cost: float, *, prompt: int | None = None,
           completion: int | None = None, errors: int = 0, cache_hits: int = 0,
           cached: int = 0) -> dict[str, Any]:
    return {"requests": requests, "prompt_tokens": 10 * requests if prompt is None else prompt,
            "completion_tokens": 5 * requests if completion is None else completion,
            "cached_tokens": cached, "cost": pytest.approx(cost), "errors": errors,
            "cache_hits": cache_hits}


async def alembic_version(url: str) -> list[str]:
    database = Database(url)
    try:
        async with database.engine.connect() as connection:
            return list((await connection.scalars(
                text("SELECT version_num FROM alembic_version"))).all())
    finally:
        await database.aclose()


async def table_names(url: str) -> set[str]:
    database = Database(url)
    try:
        async with database.engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await database.aclose()


# migrations


async def test_upgrade_from_empty_to_head_and_again(empty_url: str) -> None:
    assert await table_names(empty_url) == set()
    database = Database(empty_url)
    await database.upgrade()
    assert await table_names(empty_url) == {*TABLES, "alembic_version"}
    assert await alembic_version(empty_url) == [migrations.HEAD]
    await database.upgrade()  # a second run finds head and changes nothing
    assert await alembic_version(empty_url) == [migrations.HEAD]
    await database.create("orgs", {"name": "after two upgrades"})
    await database.aclose()


def test_head_names_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config("sqlite://"))
    assert script.get_heads() == [migrations.HEAD]


def test_a_database_at_head_starts_without_loading_alembic(empty_url: str) -> None:
    asyncio.run(Database(empty_url).upgrade())
    # A fresh interpreter: this one has loaded Alembic for the other tests.
    probe = ("import asyncio, sys\n"
             "from llmport.db import Database\n"
             f"asyncio.run(Database({empty_url!r}).upgrade())\n"
             "print(sorted(m for m in ('alembic', 'mako') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


async def test_concurrent_upgrades_in_one_process(empty_url: str) -> None:
    first, second = Database(empty_url), Database(empty_url)
    await asyncio.gather(first.upgrade(), second.upgrade(), first.upgrade())
    assert await alembic_version(empty_url) == [migrations.HEAD]
    await first.aclose()
    await second.aclose()


def _upgrade_in_child(url: str) -> None:
    asyncio.run(Database(url).upgrade())


def test_concurrent_upgrades_from_several_processes(empty_url: str) -> None:
    # Forked (no interpreter start-up to wait for): separate processes all the same, with
    # their own Alembic globals, file descriptors and database connections.
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_upgrade_in_child, args=(empty_url,)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert asyncio.run(alembic_version(empty_url)) == [migrations.HEAD]
    if empty_url.startswith("sqlite"):
        assert Path(empty_url.split("///", 1)[1] + ".migrate-lock").exists()


async def test_an_existing_database_upgrades_with_its_records(empty_url: str) -> None:
    from alembic import command

    # A database the first release made, holding a record, then a start of this release.
    await asyncio.to_thread(command.upgrade, migrations.alembic_config(empty_url), "0001")
    old = Database(empty_url)
    async with old.engine.begin() as connection:
        await connection.execute(text(
            "INSERT INTO spend_log (id, request_id, created_at, principal_kind, endpoint, model,"
            " served_model, stream, status, prompt_tokens, completion_tokens, cached_tokens,"
            " cost, latency_ms, cache_hit, attempts) VALUES ('r1', 'q1', :at, 'key', 'chat',"
            " 'asked', 'answered', false, 200, 3, 4, 0, 0.5, 1.0, false, 1)"),
            {"at": T0.replace(tzinfo=None)})
    await old.aclose()
    database = Database(empty_url)
    await database.upgrade()
    try:
        assert await alembic_version(empty_url) == [migrations.HEAD]
        assert (await database.usage(model="answered"))[0]["requests"] == 1
        assert (await database.usage(model="asked"))[0]["requests"] == 0
    finally:
        await database.aclose()


async def test_the_model_filter_is_served_by_an_index(db: Database) -> None:
    """Usage for one model reads the index on the model that answered, not the whole log."""
    from sqlalchemy import func, select

    from llmport.db.models import SpendLog
    from llmport.db.reports import spend_filters

    query = select(func.count()).select_from(SpendLog).where(*spend_filters(model="m"))
    sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
    async with db.engine.connect() as connection:
        if db.engine.dialect.name == "sqlite":
            plan = (await connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")).all()
        else:  # a tiny table: tell the planner a sequential scan is out, if it can help it
            await connection.exec_driver_sql("SET enable_seqscan = off")
            plan = (await connection.exec_driver_sql(f"EXPLAIN {sql}")).all()
    assert "ix_spend_log_answering_model_created_at" in str(plan), plan


async def test_migration_matches_the_models(db: Database) -> None:
    def diff(sync: Any) -> list[Any]:
        context = MigrationContext.configure(sync, opts={"compare_type": True,
                                                         "compare_server_default": True})
        return compare_metadata(context, Base.metadata)

    async with db.engine.connect() as connection:
        assert await connection.run_sync(diff) == []


async def test_memory_sqlite_database_migrates_on_its_own_connection() -> None:
    database = Database("sqlite+aiosqlite://")
    await asyncio.gather(database.upgrade(), database.upgrade())
    org = await database.create("orgs", {"name": "in memory"})
    assert (await database.get("orgs", org.id)).name == "in memory"
    await database.aclose()


async def test_ping(db: Database, tmp_path: Path) -> None:
    assert await db.ping() is True
    unreachable = Database(f"postgresql+asyncpg://postgres@{PG_HOST}:1/none")
    unopenable = Database(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db")
    assert await unreachable.ping() is False
    assert await unopenable.ping() is False
    await unreachable.aclose()
    await unopenable.aclose()


async def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/pragmas.db")
    async with database.engine.connect() as connection:
        assert await connection.scalar(text("PRAGMA journal_mode")) == "wal"
        assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
        assert await connection.scalar(text("PRAGMA busy_timeout")) >= 1000
    await database.aclose()


# tenants


async def test_crud_for_every_kind(db: Database) -> None:
    org = await db.create("orgs", {"name": "acme"})
    team = await db.create("teams", {"name": "research", "org_id": org.id})
    user = await db.create("users", {"name": "ada", "email": "ada@acme.test",
                                     "org_id": org.id, "team_id": team.id})
    key = await db.create("keys", {"key_hash": hash_key("sk-lp-1"), "prefix": "sk-lp-1",
                                   "user_id": user.id})
    rows = {"orgs": org, "teams": team, "users": user, "keys": key}
    for kind, prefix in (("orgs", "org_"), ("teams", "team_"), ("users", "user_"),
                         ("keys", "key_")):
        row = rows[kind]
        assert row.id.startswith(prefix)
        assert len(row.id) == len(prefix) + 16
        assert row.created_at.tzinfo is not None
        assert (await db.get(kind, row.id)).id == row.id  # type: ignore[arg-type]
        assert [found.id for found in await db.list(kind)] == [row.id]  # type: ignore[arg-type]
        updated = await db.update(kind, row.id, {"rpm_limit": 7, "meta": {"k": "v"}})  # type: ignore[arg-type]
        assert (updated.rpm_limit, updated.meta) == (7, {"k": "v"})
        assert updated.updated_at >= row.created_at
        fresh = await db.get(kind, row.id)  # type: ignore[arg-type]
        assert (fresh.rpm_limit, fresh.meta) == (7, {"k": "v"})
    assert await db.update("orgs", "org_missing", {"name": "x"}) is None
    assert await db.get("teams", "team_missing") is None
    for kind in ("keys", "users", "teams", "orgs"):
        assert await db.delete(kind, rows[kind].id) is True  # type: ignore[arg-type]
        assert await db.get(kind, rows[kind].id) is None  # type: ignore[arg-type]
        assert await db.delete(kind, rows[kind].id) is False  # type: ignore[arg-type]


async def test_create_keeps_a_given_id(db: Database) -> None:
    org = await db.create("orgs", {"id": "org_fixed", "name": "seeded"})
    assert org.id == "org_fixed"
    assert (await db.get("orgs", "org_fixed")).name == "seeded"


async def test_bad_fields_and_kinds_are_refused(db: Database) -> None:
    with pytest.raises(ValueError, match="no field colour"):
        await db.create("orgs", {"name": "x", "colour": "red"})
    with pytest.raises(ValueError, match="unknown kind"):
        await db.create("widgets", {"name": "x"})  # type: ignore[arg-type]
    org = await db.create("orgs", {"name": "x"})
    with pytest.raises(ValueError, match="id cannot change"):
        await db.update("orgs", org.id, {"id": "org_other"})
    with pytest.raises(ValueError, match="no field"):
        await db.list("orgs", filters={"colour": "red"})


async def test_limits_and_json_round_trip(db: Database) -> None:
    reset = datetime(2025, 1, 1, 12, tzinfo=UTC)
    key = await db.create("keys", {
        "key_hash": hash_key("sk-json"), "prefix": "sk-lp-json", "scopes": ["admin"],
        "allowed_models": ["gpt-4o", "claude"], "model_limits": {"gpt-4o": {"rpm_limit": 10}},
        "max_budget": 12.5, "soft_budget": 10.0, "budget_period": "monthly",
        "budget_reset_at": reset, "tpm_limit": 1000, "max_parallel_requests": 3,
        "priority": 2, "signing_secret": "s3cret",
        "expires_at": datetime(2030, 1, 1, 3, tzinfo=UTC)})
    plain = await db.create("keys", {"key_hash": hash_key("sk-plain"), "prefix": "sk-lp-pl"})
    got = await db.get("keys", key.id)
    assert got.scopes == ["admin"]
    assert got.allowed_models == ["gpt-4o", "claude"]
    assert got.model_limits == {"gpt-4o": {"rpm_limit": 10}}
    assert (got.max_budget, got.soft_budget, got.budget_period) == (12.5, 10.0, "monthly")
    assert got.budget_reset_at == reset
    assert got.budget_reset_at.tzinfo is not None
    assert (got.tpm_limit, got.max_parallel_requests, got.priority) == (1000, 3, 2)
    assert got.signing_secret == "s3cret"
    assert got.expires_at == datetime(2030, 1, 1, 3, tzinfo=UTC)
    assert plain.scopes == []
    assert (await db.get("keys", plain.id)).scopes == []
    # NULL, not JSON null: "every model"
    async with db.engine.connect() as connection:
        nulls = await connection.scalar(text(
            "SELECT count(*) FROM api_keys WHERE allowed_models IS NULL AND metadata IS NULL"))
    assert nulls == 1


async def test_aware_times_in_other_zones_come_back_as_utc(db: Database) -> None:
    plus_two = datetime(2025, 6, 1, 16, 0, tzinfo=timezone(timedelta(hours=2)))
    org = await db.create("orgs", {"name": "tz", "budget_reset_at": plus_two})
    got = await db.get("orgs", org.id)
    assert got.budget_reset_at == datetime(2025, 6, 1, 14, 0, tzinfo=UTC)
    assert got.budget_reset_at.utcoffset() == timedelta(0)


async def test_list_filters_and_pagination(db: Database) -> None:
    acme = await db.create("orgs", {"name": "acme"})
    other = await db.create("orgs", {"name": "other"})
    made = [await db.create("teams", {"name": f"t{i}", "org_id": acme.id}) for i in range(5)]
    await db.create("teams", {"name": "elsewhere", "org_id": other.id})
    loose = await db.create("teams", {"name": "no org"})
    newest_first = [team.id for team in reversed(made)]
    listed = await db.list("teams", filters={"org_id": acme.id})
    assert [team.id for team in listed] == newest_first
    pages = [await db.list("teams", filters={"org_id": acme.id}, limit=2, offset=offset)
             for offset in (0, 2, 4, 6)]
    assert [[team.id for team in page] for page in pages] == [
        newest_first[0:2], newest_first[2:4], newest_first[4:], []]
    assert [team.id for team in await db.list("teams", filters={"org_id": None})] == [loose.id]
    assert {team.id for team in await db.list("teams", filters={"name": ["t1", "no org"]})} \
        == {made[1].id, loose.id}
    assert len(await db.list("teams")) == 7
    assert len(await db.list("teams", limit=3)) == 3


async def test_email_unique_when_set(db: Database) -> None:
    await db.create("users", {"name": "no email"})
    await db.create("users", {"name": "no email either"})
    await db.create("users", {"email": "a@example.test"})
    with pytest.raises(IntegrityError):
        await db.create("users", {"email": "a@example.test"})


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(IntegrityError):
        await db.create("teams", {"name": "orphan", "org_id": "org_does_not_exist"})


async def test_key_by_hash(db: Database) -> None:
    key = await db.create("keys", {"key_hash": hash_key("sk-lp-secret"), "prefix": "sk-lp-sec"})
    revoked = await db.create("keys", {"key_hash": hash_key("sk-lp-old"), "prefix": "sk-lp-old",
                                       "revoked_at": datetime.now(UTC)})
    found = await db.key_by_hash(hash_key("sk-lp-secret"))
    assert isinstance(found, ApiKey)
    assert found.id == key.id
    assert (await db.key_by_hash(hash_key("sk-lp-old"))).id == revoked.id  # the caller decides
    assert await db.key_by_hash(hash_key("sk-lp-unknown")) is None
    with pytest.raises(IntegrityError):
        await db.create("keys", {"key_hash": hash_key("sk-lp-secret"), "prefix": "dup"})


async def test_principal_rows_explicit_inherited_and_none(db: Database) -> None:
    org = await db.create("orgs", {"name": "acme", "max_budget": 100.0})
    team = await db.create("teams", {"name": "t", "org_id": org.id})
    user = await db.create("users", {"name": "u", "org_id": org.id, "team_id": team.id})
    other_team = await db.create("teams", {"name": "other", "org_id": org.id})

    full = await db.create("keys", {"key_hash": hash_key("a"), "prefix": "a", "org_id": org.id,
                                    "team_id": other_team.id, "user_id": user.id})
    o, t, u = await db.principal_rows(full)
    assert (o.id, t.id, u.id) == (org.id, other_team.id, user.id)  # the key's own ids win
    assert o.max_budget == 100.0

    users_key = await db.create("keys", {"key_hash": hash_key("b"), "prefix": "b",
                                         "user_id": user.id})
    o, t, u = await db.principal_rows(users_key)
    assert (o.id, t.id, u.id) == (org.id, team.id, user.id)  # inherited from the user

    bare = await db.create("keys", {"key_hash": hash_key("c"), "prefix": "c"})
    assert await db.principal_rows(bare) == (None, None, None)

    o, t, u = await db.entity_rows(None, team.id, None)
    assert (o.id, t.id, u) == (org.id, team.id, None)
    o, t, u = await db.entity_rows(org.id, None, None)
    assert (o.id, t, u) == (org.id, None, None)
    assert await db.entity_rows("org_gone", "team_gone", "user_gone") == (None, None, None)


async def test_deletes_cascade_and_set_null(db: Database) -> None:
    org = await db.create("orgs", {"name": "acme"})
    team = await db.create("teams", {"name": "t", "org_id": org.id})
    user = await db.create("users", {"name": "u", "org_id": org.id, "team_id": team.id})
    team_key = await db.create("keys", {"key_hash": hash_key("t"), "prefix": "t",
                                        "team_id": team.id})
    user_key = await db.create("keys", {"key_hash": hash_key("u"), "prefix": "u",
                                        "user_id": user.id})
    org_key = await db.create("keys", {"key_hash": hash_key("o"), "prefix": "o",
                                       "org_id": org.id})
    loner = await db.create("users", {"name": "no org"})

    assert await db.delete("teams", team.id)
    assert (await db.get("users", user.id)).team_id is None  # SET NULL: the user stays
    assert await db.get("keys", team_key.id) is None  # CASCADE: the team's key goes
    assert await db.get("keys", user_key.id) is not None

    assert await db.delete("users", user.id)
    assert await db.get("keys", user_key.id) is None

    second_team = await db.create("teams", {"name": "t2", "org_id": org.id})
    second_user = await db.create("users", {"name": "u2", "org_id": org.id})
    assert await db.delete("orgs", org.id)
    for kind, row in (("teams", second_team), ("users", second_user), ("keys", org_key)):
        assert await db.get(kind, row.id) is None  # type: ignore[arg-type]
    assert await db.get("users", loner.id) is not None


# spend log


async def test_insert_spend_is_idempotent(db: Database) -> None:
    batch = [record() for _ in range(3)]
    assert await db.insert_spend(batch) == 3
    assert await db.insert_spend(batch) == 0
    overlapping = [*batch[1:], record(), record()]
    assert await db.insert_spend(overlapping) == 2
    assert await db.count_spend() == 5
    repeated = record()
    assert await db.insert_spend([repeated, dict(repeated)]) == 1
    assert await db.insert_spend([]) == 0
    assert await db.count_spend() == 6


async def test_insert_spend_big_batch(db: Database) -> None:
    batch = [record(created_at=T0.timestamp() + i) for i in range(3000)]
    assert await db.insert_spend(batch) == 3000
    assert await db.insert_spend([*batch[-10:], record()]) == 1
    assert await db.count_spend() == 3001


async def test_insert_spend_accepts_iso_datetime_and_epoch(db: Database) -> None:
    moment = datetime(2025, 3, 1, 23, 30, 15, 250000, tzinfo=UTC)
    rows = [record(id="iso", created_at="2025-03-02T01:30:15.250+02:00"),
            record(id="iso_z", created_at="2025-03-01T23:30:15.25Z"),
            record(id="aware", created_at=moment),
            record(id="naive", created_at=moment.replace(tzinfo=None)),
            record(id="epoch", created_at=moment.timestamp())]
    assert await db.insert_spend(rows) == 5
    stored = await db.spend_records()
    assert {row["id"]: row["created_at"] for row in stored} == {
        name: moment for name in ("iso", "iso_z", "aware", "naive", "epoch")}
    assert all(row["created_at"].utcoffset() == timedelta(0) for row in stored)


async def test_insert_spend_defaults_and_refusals(db: Database) -> None:
    minimal = {"id": "m1", "request_id": "r1", "principal_kind": "master",
               "endpoint": "/v1/embeddings", "model": "e", "status": 200}
    assert await db.insert_spend([minimal]) == 1
    (row,) = await db.spend_records()
    assert (row["prompt_tokens"], row["cost"], row["stream"], row["attempts"]) == (0, 0.0,
                                                                                   False, 1)
    assert row["key_id"] is None
    with pytest.raises(ValueError, match="unknown fields: colour"):
        await db.insert_spend([record(colour="red")])
    with pytest.raises(ValueError, match="lacks: model"):
        await db.insert_spend([{k: v for k, v in record().items() if k != "model"}])
    assert await db.count_spend() == 1  # nothing of a refused batch was written


async def seed_usage(db: Database) -> None:
    day2 = T0 + timedelta(hours=3)  # past midnight UTC: the next day
    await db.insert_spend([
        record(),
        record(cost=2.0, status=500, error_type="upstream_error"),
        record(key_id="key_b", user_id="user_b", cost=0.5, cache_hit=True, cached_tokens=4),
        record(key_id="key_c", user_id=None, team_id="team_b", org_id="org_b",
               model="claude", served_model="claude-3", deployment="d2", cost=3.0,
               created_at=day2),
        record(model="alias", served_model="gpt-4o", deployment="d2", cost=0.25,
               created_at=day2, status=429),
    ])


async def test_usage_totals_empty_and_full(db: Database) -> None:
    assert await db.usage() == [totals(0, 0.0)]
    await seed_usage(db)
    assert await db.usage() == [totals(5, 6.75, errors=2, cache_hits=1, cached=4)]


GROUPED: dict[str, dict[str | None, tuple[int, float]]] = {
    "key_id": {"key_a": (3, 3.25), "key_b": (1, 0.5), "key_c": (1, 3.0)},
    "user_id": {None: (1, 3.0), "user_a": (3, 3.25), "user_b": (1, 0.5)},
    "team_id": {"team_a": (4, 3.75), "team_b": (1, 3.0)},
    "org_id": {"org_a": (4, 3.75), "org_b": (1, 3.0)},
    "model": {"alias": (1, 0.25), "claude": (1, 3.0), "gpt-4o": (3, 3.5)},
    "served_model": {None: (3, 3.5), "claude-3": (1, 3.0), "gpt-4o": (1, 0.25)},
    "deployment": {"d1": (3, 3.5), "d2": (2, 3.25)},
    "day": {"2025-03-01": (3, 3.5), "2025-03-02": (2, 3.25)},
}


async def test_usage_group_by_each_column(db: Database) -> None:
    await seed_usage(db)
    for column, expected in GROUPED.items():
        rows = await db.usage(group_by=[column])
        assert [row[column] for row in rows] == list(expected), column  # ordered, NULL first
        assert {row[column]: (row["requests"], row["cost"]) for row in rows} == {
            value: (count, pytest.approx(cost)) for value, (count, cost) in expected.items()
        }, column


async def test_usage_group_by_day_and_model(db: Database) -> None:
    await seed_usage(db)
    rows = await db.usage(group_by=["day", "model"])
    assert rows == [
        {"day": "2025-03-01", "model": "gpt-4o", **totals(3, 3.5, errors=1, cache_hits=1,
                                                         cached=4)},
        {"day": "2025-03-02", "model": "alias", **totals(1, 0.25, errors=1)},
        {"day": "2025-03-02", "model": "claude", **totals(1, 3.0)},
    ]
    with pytest.raises(ValueError, match="cannot group usage by 'colour'"):
        await db.usage(group_by=["colour"])


async def test_usage_filters(db: Database) -> None:
    await seed_usage(db)

    async def cost(**filters: Any) -> tuple[int, float]:
        (row,) = await db.usage(**filters)
        return row["requests"], pytest.approx(row["cost"])

    assert await cost(key_id="key_b") == (1, 0.5)
    assert await cost(user_id="user_a") == (3, 3.25)
    assert await cost(team_id="team_b") == (1, 3.0)
    assert await cost(org_id="org_a") == (4, 3.75)
    assert await cost(org_id="org_a", key_id="key_a") == (3, 3.25)
    # model: the served model when known, else the requested one
    assert await cost(model="gpt-4o") == (4, 3.75)
    assert await cost(model="alias") == (0, 0.0)
    assert await cost(model="claude-3") == (1, 3.0)
    # start inclusive, end exclusive
    day2 = T0 + timedelta(hours=3)
    assert await cost(start=day2) == (2, 3.25)
    assert await cost(end=day2) == (3, 3.5)
    assert await cost(start=T0, end=T0 + timedelta(seconds=1)) == (3, 3.5)
    assert await cost(start=day2, model="gpt-4o", team_id="team_a") == (1, 0.25)


async def test_spend_total(db: Database) -> None:
    await db.insert_spend([record(created_at=T0 + timedelta(hours=h), cost=float(h + 1))
                           for h in range(4)])  # costs 1, 2, 3, 4
    assert await db.spend_total("key_id", "key_a", None) == pytest.approx(10.0)
    assert await db.spend_total("org_id", "org_a", T0 + timedelta(hours=2)) == pytest.approx(7.0)
    assert await db.spend_total("team_id", "team_a", T0 + timedelta(hours=9)) == 0.0
    assert await db.spend_total("user_id", "someone_else", None) == 0.0
    with pytest.raises(ValueError, match="spend_total"):
        await db.spend_total("model", "gpt-4o", None)  # type: ignore[arg-type]


async def test_spend_records(db: Database) -> None:
    ids = [f"r{h}" for h in range(5)]
    await db.insert_spend([record(id=rid, created_at=T0 + timedelta(minutes=h),
                                  key_id="key_a" if h % 2 == 0 else "key_b")
                           for h, rid in enumerate(ids)])
    assert [row["id"] for row in await db.spend_records()] == ids[::-1]
    assert [row["id"] for row in await db.spend_records(key_id="key_a")] == ["r4", "r2", "r0"]
    assert [row["id"] for row in await db.spend_records(limit=2, offset=1)] == ["r3", "r2"]
    assert [row["id"] for row in await db.spend_records(
        start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=3))] == ["r2", "r1"]
    (row,) = await db.spend_records(limit=1)
    assert row == {**record(id="r4", created_at=T0 + timedelta(minutes=4), key_id="key_a"),
                   "request_id": row["request_id"]}


async def test_purge_spend(db: Database) -> None:
    await db.insert_spend([record(created_at=T0 + timedelta(days=d)) for d in range(4)])
    assert await db.purge_spend(T0 + timedelta(days=2)) == 2
    assert await db.count_spend() == 2
    assert await db.purge_spend(T0 + timedelta(days=2)) == 0
    assert [row["created_at"] for row in await db.spend_records()] == [
        T0 + timedelta(days=3), T0 + timedelta(days=2)]
    assert await db.purge_spend(T0 + timedelta(days=10)) == 2
    assert await db.count_spend() == 0


async def test_a_chain_of_responses_stores_each_turn_once_and_outlives_deletes_and_purges(
        db: Database) -> None:
    """Each response continuing another keeps only its turn; the whole conversation reads
    back in order; deleting a response, or purging the oldest, hands their turns on to the
    responses continuing them (forks too), so those stay whole."""
    from llmport.db.job_models import StoredResponse
    from llmport.db.responses import ResponseTables

    tables = ResponseTables(db.sessions)

    def turn(n: int) -> list[dict[str, Any]]:
        return [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]

    def turns(*ns: int) -> list[dict[str, Any]]:
        return [message for n in ns for message in turn(n)]

    async def history(response_id: str) -> list[dict[str, Any]]:
        row = await tables.get("me", response_id)
        assert row is not None
        return await tables.history(row)

    await tables.save("me", {"id": "r1"}, [], turn(1))
    for n in range(2, 7):
        await tables.save("me", {"id": f"r{n}"}, [], turn(n), f"r{n - 1}",
                          earlier=turns(*range(1, n)))
    await tables.save("me", {"id": "r3b"}, [], turn(9), "r3", earlier=turns(1, 2, 3))  # a fork
    async with db.sessions() as session:
        stored = {row.id: row.history for row in
                  (await session.execute(select(StoredResponse))).scalars()}
    assert stored == {**{f"r{n}": turn(n) for n in range(1, 7)}, "r3b": turn(9)}  # once each
    assert await history("r6") == turns(1, 2, 3, 4, 5, 6)
    assert await history("r1") == turn(1)

    assert not await tables.delete("you", "r3")  # not theirs: nothing changes
    assert await tables.delete("me", "r3")  # continued by r4 and by the fork
    assert await tables.get("me", "r3") is None
    assert await history("r6") == turns(1, 2, 3, 4, 5, 6)
    assert await history("r3b") == turns(1, 2, 3, 9)

    await tables.save("me", {"id": "solo"}, [], turn(8))  # continued by nothing
    await tables.save("me", {"id": "tip"}, [], turn(10), "solo", earlier=turn(8))
    async with db.sessions.begin() as session:  # these are old: r1 and r2 are continued
        for old in ("r1", "r2", "solo", "tip"):  # by newer ones, tip by none
            row = await session.get(StoredResponse, old)
            assert row is not None
            row.created_at = T0
    assert await tables.purge(T0 + timedelta(days=1)) == 4
    assert await tables.get("me", "solo") is None and await tables.get("me", "tip") is None
    assert await history("r6") == turns(1, 2, 3, 4, 5, 6)
    assert await history("r3b") == turns(1, 2, 3, 9)

    # Continuing a response deleted in the meantime: the row keeps the whole history.
    await tables.save("me", {"id": "r7"}, [], turn(7), "gone", earlier=turns(1, 2))
    assert await history("r7") == turns(1, 2, 7)

"""``Database``: the engine, migrations and every query the gateway makes.

One class for SQLite (``sqlite+aiosqlite:///path/llmport.db``, the default) and
PostgreSQL (``postgresql+asyncpg://user@host/db``). SQLite runs in WAL mode with a busy
timeout and foreign keys on, because several worker processes share one file.

Rows come back as detached ORM objects (``expire_on_commit=False``). Integrity errors
(an email already taken, an unknown org id) propagate as ``sqlalchemy.exc.IntegrityError``.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    bindparam,
    delete,
    event,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from llmport.db import migrations, reports
from llmport.db.bulk import SpendInsert, SQLiteSpendWriter
from llmport.db.models import (
    TENANT_MODELS,
    ApiKey,
    Organization,
    SpendLog,
    Team,
    User,
    new_id,
    spend_row,
)

Kind = Literal["orgs", "teams", "users", "keys"]
SpendColumn = Literal["key_id", "user_id", "team_id", "org_id"]
SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_TIMEOUT = 5.0


def configure_sqlite(engine: AsyncEngine, *, foreign_keys: bool = True) -> None:
    """Set every new SQLite connection's pragmas (busy timeout first: WAL may have to wait)."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)


class Database:
    def __init__(self, url: str) -> None:
        self._url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        path = parsed.database
        sqlite_file = self.dialect == "sqlite" and path not in (None, "", ":memory:")
        options: dict[str, Any] = {"pool_pre_ping": self.dialect != "sqlite"}
        if sqlite_file:
            # SQLite takes one writer at a time and each pooled connection keeps its own page
            # cache (and aiosqlite thread): two stay open, bursts borrow a few more.
            options.update(pool_size=2, max_overflow=8)
        self.engine = create_async_engine(url, **options)
        if self.dialect == "sqlite":
            configure_sqlite(self.engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._spend_insert = SpendInsert(self.engine.dialect)
        # On a SQLite file the spend log has a connection of its own (see SQLiteSpendWriter);
        # an in-memory database is one connection's alone, so it keeps the engine's.
        self._spend_writer = (SQLiteSpendWriter(str(path), self._spend_insert,
                                                SQLITE_BUSY_TIMEOUT_MS) if sqlite_file else None)

    @property
    def url(self) -> str:
        """The URL as given (it may hold a password)."""
        return self._url

    async def upgrade(self) -> None:
        """Run Alembic migrations to head (in a worker thread; the env.py uses the async engine).

        Safe to call from several processes at once: a PostgreSQL advisory lock, or on
        SQLite a file lock next to the database file (see ``migrations``)."""
        await migrations.upgrade(self._url, self.engine)

    async def ping(self) -> bool:
        """``SELECT 1`` within a few seconds; never raises."""
        try:
            async with asyncio.timeout(PING_TIMEOUT), self.engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        if self._spend_writer is not None:
            await self._spend_writer.close()
        await self.engine.dispose()

    # tenants

    @staticmethod
    def _model(kind: Kind) -> tuple[Any, str]:
        if kind not in TENANT_MODELS:
            raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(TENANT_MODELS)}")
        return TENANT_MODELS[kind]

    @staticmethod
    def _check_fields(model: Any, fields: dict[str, Any]) -> None:
        unknown = fields.keys() - set(model.__mapper__.column_attrs.keys())
        if unknown:
            raise ValueError(f"{model.__tablename__} has no field {', '.join(sorted(unknown))}")

    async def create(self, kind: Kind, fields: dict[str, Any]) -> Any:
        """A new row; its id is generated unless ``fields`` names one."""
        model, prefix = self._model(kind)
        self._check_fields(model, fields)
        # Unset attributes would stay unloaded on the detached row: make them explicit NULLs.
        columns = {prop.key: None for prop in model.__mapper__.column_attrs
                   if prop.columns[0].default is None}
        row = model(**{**columns, **fields, "id": fields.get("id") or new_id(prefix)})
        async with self.sessions.begin() as session:
            session.add(row)
        return row

    async def get(self, kind: Kind, id: str) -> Any | None:
        model, _ = self._model(kind)
        async with self.sessions() as session:
            return await session.get(model, id)

    async def list(self, kind: Kind, *, filters: dict[str, Any] | None = None,
                   limit: int = 100, offset: int = 0) -> list[Any]:
        """Newest first. A filter value of None matches NULL; a list, tuple or set any member."""
        model, _ = self._model(kind)
        where: list[ColumnElement[bool]] = []
        for name, value in (filters or {}).items():
            self._check_fields(model, {name: value})
            column = getattr(model, name)
            where.append(column.in_(value) if isinstance(value, list | tuple | set | frozenset)
                         else column == value)
        query = (select(model).where(*where).order_by(model.created_at.desc(), model.id.desc())
                 .limit(limit).offset(offset))
        async with self.sessions() as session:
            return list((await session.scalars(query)).all())

    async def update(self, kind: Kind, id: str, fields: dict[str, Any]) -> Any | None:
        model, _ = self._model(kind)
        self._check_fields(model, fields)
        if "id" in fields:
            raise ValueError("a row's id cannot change")
        async with self.sessions.begin() as session:
            row = await session.get(model, id)
            if row is None:
                return None
            for name, value in {**fields, "updated_at": datetime.now(UTC)}.items():
                setattr(row, name, value)
        return row

    async def delete(self, kind: Kind, id: str) -> bool:
        model, _ = self._model(kind)
        async with self.sessions.begin() as session:
            result = await session.execute(delete(model).where(model.id == id))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key whatever its state: the caller tells revoked and expired keys apart."""
        async with self.sessions() as session:
            return await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))

    async def mark_keys_used(self, used: dict[str, float]) -> None:
        """Set each key's ``last_used_at`` (key id → epoch seconds), never to an earlier time
        than it holds (another replica may have written a later use)."""
        table = ApiKey.__table__  # Core: an executemany of one UPDATE, no ORM objects
        assert isinstance(table, Table)
        statement = (update(table)
                     .where(table.c.id == bindparam("key_id"))
                     .where(or_(table.c.last_used_at.is_(None),
                                table.c.last_used_at < bindparam("used")))
                     .values(last_used_at=bindparam("used")))
        rows = [{"key_id": key_id, "used": datetime.fromtimestamp(when, UTC)}
                for key_id, when in used.items()]
        async with self.sessions.begin() as session:
            await session.execute(statement, rows)

    async def key_root(self, key: ApiKey) -> str:
        """The first key of ``key``'s rotation chain (its own id when never rotated): what a
        key owns (files, batches, stores…) is kept under it, so it survives rotations."""
        root, seen = key, {key.id}
        async with self.sessions() as session:
            while root.rotated_from is not None and root.rotated_from not in seen:
                previous = await session.get(ApiKey, root.rotated_from)
                if previous is None:  # deleted: its id still names the chain
                    return root.rotated_from
                seen.add(previous.id)
                root = previous
        return root.id

    async def key_successor(self, key_id: str) -> str | None:
        """The newest key rotated from ``key_id`` (through any number of rotations)."""
        current, seen = key_id, {key_id}
        async with self.sessions() as session:
            while True:
                following = await session.scalar(
                    select(ApiKey.id).where(ApiKey.rotated_from == current)
                    .order_by(ApiKey.created_at.desc()).limit(1))
                if following is None or following in seen:
                    return None if current == key_id else current
                seen.add(following)
                current = following

    async def principal_rows(self, key: ApiKey) -> tuple[Organization | None, Team | None,
                                                         User | None]:
        return await self.entity_rows(key.org_id, key.team_id, key.user_id)

    async def entity_rows(self, org_id: str | None, team_id: str | None, user_id: str | None
                          ) -> tuple[Organization | None, Team | None, User | None]:
        """The org, team and user in one round trip. An id left out is inherited downwards:
        the user's team, then the team's (or the user's) org."""
        anchor = select(literal(1).label("one")).subquery()
        team = func.coalesce(literal(team_id, String), User.team_id)
        org = func.coalesce(literal(org_id, String), Team.org_id, User.org_id)
        query = (select(Organization, Team, User).select_from(anchor)
                 .outerjoin(User, User.id == literal(user_id, String))
                 .outerjoin(Team, Team.id == team)
                 .outerjoin(Organization, Organization.id == org))
        async with self.sessions() as session:
            found = (await session.execute(query)).one()
        return found[0], found[1], found[2]

    # spend log

    async def insert_spend(self, records: Sequence[dict[str, Any]]) -> int:
        """Insert records (dicts with the spend_log column names; created_at may be an ISO
        string, a datetime or epoch seconds; missing counters default to zero) in one
        transaction, skipping any whose id already exists. Returns how many were new."""
        if not records:
            return 0
        if self._spend_writer is not None:
            return await self._spend_writer.insert(records)
        rows = [spend_row(record) for record in records]
        async with self.engine.begin() as connection:
            return await self._spend_insert.run(connection, rows)

    async def spend_total(self, column: SpendColumn, value: str, since: datetime | None) -> float:
        """Sum of cost for that tenant since ``since`` (None = all time)."""
        if column not in reports.GROUPS or column in ("model", "served_model", "deployment"):
            raise ValueError(f"spend_total by {column!r}")
        where = [reports.GROUPS[column] == value]
        if since is not None:
            where.append(SpendLog.created_at >= since)
        async with self.engine.connect() as connection:
            total = await connection.scalar(
                select(func.coalesce(func.sum(SpendLog.cost), 0.0)).where(*where))
        return float(total or 0.0)

    async def usage(self, *, key_id: str | None = None, user_id: str | None = None,
                    team_id: str | None = None, org_id: str | None = None,
                    model: str | None = None, start: datetime | None = None,
                    end: datetime | None = None, group_by: Sequence[str] = ()
                    ) -> builtins.list[dict[str, Any]]:
        """Aggregate the spend log (see ``reports``): each row has the group_by columns plus
        requests, prompt_tokens, completion_tokens, cached_tokens, cost, errors (status >=
        400) and cache_hits. No group_by: exactly one row of totals."""
        where = reports.spend_filters(key_id=key_id, user_id=user_id, team_id=team_id,
                                      org_id=org_id, model=model, start=start, end=end)
        query = reports.usage_query(group_by, where)
        async with self.engine.connect() as connection:
            return [reports.usage_row(row) for row in await connection.execute(query)]

    async def spend_records(self, *, key_id: str | None = None, start: datetime | None = None,
                            end: datetime | None = None, limit: int = 100, offset: int = 0
                            ) -> builtins.list[dict[str, Any]]:
        """Raw log rows, newest first (``start`` inclusive, ``end`` exclusive)."""
        where = reports.spend_filters(key_id=key_id, start=start, end=end)
        query = (select(SpendLog.__table__).where(*where)
                 .order_by(SpendLog.created_at.desc(), SpendLog.id.desc())
                 .limit(limit).offset(offset))
        async with self.engine.connect() as connection:
            return [dict(row._mapping) for row in await connection.execute(query)]

    async def count_spend(self) -> int:
        async with self.engine.connect() as connection:
            return int(await connection.scalar(select(func.count()).select_from(SpendLog)) or 0)

    async def purge_spend(self, before: datetime) -> int:
        """Retention: delete the rows older than ``before``; returns how many went."""
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(SpendLog).where(SpendLog.created_at < before))
        return int(result.rowcount)

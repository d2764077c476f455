"""The tables: tenants (organisations → teams → users → API keys) and the spend log.

Every tenant row carries the same limits (``Limits``): what it may use, how fast and
how much. Deleting an organisation deletes its teams, users and keys; deleting a team
or a user deletes their keys (a key must never outlive its owner and so escape the
owner's limits) while a team's users stay in the organisation. The spend log has no
foreign keys: it outlives deleted tenants.

Timestamps are timezone-aware UTC on both dialects (``UTCDateTime``). ``migrations/``
creates this schema; a test checks that the two agree.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {"ix": "ix_%(table_name)s_%(column_0_N_name)s", "pk": "pk_%(table_name)s",
          "uq": "uq_%(table_name)s_%(column_0_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s"}

# SQL NULL for None (not JSON 'null'): a NULL allow-list means "every model".
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """A tenant id: the type prefix and 16 random hex characters (``org_3f9a…``)."""
    return f"{prefix}_{secrets.token_hex(8)}"


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC time (a naive one is UTC already). OverflowError when its
    UTC date falls outside the years 1 to 9999."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out. SQLite keeps no zone, so it stores naive UTC."""

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'id', '?')}>"


class Limits:
    """What a tenant may use; NULL everywhere means "no limit of this kind"."""

    allowed_models: Mapped[list[str] | None] = mapped_column(JSONType)
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    max_parallel_requests: Mapped[int | None] = mapped_column(Integer)
    max_budget: Mapped[float | None] = mapped_column(Float)  # US$
    soft_budget: Mapped[float | None] = mapped_column(Float)  # US$, alerts only
    budget_period: Mapped[str | None] = mapped_column(String(16))  # daily|weekly|monthly|total
    budget_reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Organization(Limits, Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String)


class Team(Limits, Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String)


class User(Limits, Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str | None] = mapped_column(
        ForeignKey("teams.id", ondelete="SET NULL"), index=True)
    name: Mapped[str | None] = mapped_column(String)
    email: Mapped[str | None] = mapped_column(String, unique=True)


def _empty_list() -> list[str]:
    return []


class ApiKey(Limits, Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str | None] = mapped_column(String)
    org_id: Mapped[str | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str | None] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scopes: Mapped[list[str]] = mapped_column(
        JSONType, default=_empty_list, server_default=text("'[]'"))
    model_limits: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    priority: Mapped[int | None] = mapped_column(Integer)
    signing_secret: Mapped[str | None] = mapped_column(String)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    rotated_from: Mapped[str | None] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SpendLog(Base):
    """One finished request. ``id`` is made by the gateway, so a journal replays exactly once."""

    __tablename__ = "spend_log"
    __table_args__ = tuple(Index(None, column, "created_at") for column in
                           ("key_id", "user_id", "team_id", "org_id"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    key_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(64))
    team_id: Mapped[str | None] = mapped_column(String(64))
    org_id: Mapped[str | None] = mapped_column(String(64))
    principal_kind: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str] = mapped_column(String)
    model: Mapped[str] = mapped_column(String)  # as requested
    served_model: Mapped[str | None] = mapped_column(String)
    deployment: Mapped[str | None] = mapped_column(String)
    stream: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    cost: Mapped[float] = mapped_column(Float)  # US$
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    cache_hit: Mapped[bool] = mapped_column(Boolean)
    attempts: Mapped[int] = mapped_column(Integer)


# The usage reports' model filter is on the model that answered (after fallbacks), so its
# index is on that expression (db/reports.py: spend_filters), written as the filter writes it.
Index("ix_spend_log_answering_model_created_at",
      func.coalesce(SpendLog.served_model, SpendLog.model), SpendLog.created_at)

TENANT_MODELS: dict[str, tuple[type[Base], str]] = {
    "orgs": (Organization, "org"), "teams": (Team, "team"),
    "users": (User, "user"), "keys": (ApiKey, "key")}

_SPEND_COLUMNS = {column.key: column for column in SpendLog.__table__.columns}
SPEND_DEFAULTS: dict[str, Any] = {
    "key_id": None, "user_id": None, "team_id": None, "org_id": None, "served_model": None,
    "deployment": None, "error_type": None, "ttft_ms": None, "stream": False, "prompt_tokens": 0,
    "completion_tokens": 0, "cached_tokens": 0, "cost": 0.0, "latency_ms": 0.0,
    "cache_hit": False, "attempts": 1}


def _timestamp(value: Any) -> datetime:
    if value is None:
        return datetime.now(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(parsed, datetime):
        raise ValueError(f"spend record created_at {value!r} is not a time")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def spend_row(record: dict[str, Any]) -> dict[str, Any]:
    """A spend record as a complete ``spend_log`` row: ``created_at`` (an ISO string, a
    datetime or epoch seconds; naive means UTC; absent means now) becomes an aware
    datetime, absent counters zero. Unknown fields are refused rather than dropped."""
    unknown = record.keys() - _SPEND_COLUMNS.keys()
    if unknown:
        raise ValueError(f"spend record has unknown fields: {', '.join(sorted(unknown))}")
    row = {**SPEND_DEFAULTS, **record, "created_at": _timestamp(record.get("created_at"))}
    missing = _SPEND_COLUMNS.keys() - row.keys()
    if missing:
        raise ValueError(f"spend record lacks: {', '.join(sorted(missing))}")
    return row


# The files, batches, vector stores, responses and conversations tables live in their own
# module; imported here so that ``Base.metadata`` (migrations, their agreement test) always
# has them, whichever module is imported first.
from llmport.db import job_models  # noqa: E402,F401

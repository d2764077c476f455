"""Tenancy (organizations, teams, users, api_keys) and the spend log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand. Types are spelled out here, not imported from ``models``, so that this
revision keeps meaning what it meant when the models change later. Constraint and index
names follow the models' naming convention.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(64)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _time(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _owner(table: str, column: str, parent: str, ondelete: str) -> sa.Column[object]:
    return sa.Column(column, ID, sa.ForeignKey(f"{parent}.id", name=f"fk_{table}_{column}",
                                               ondelete=ondelete), nullable=True)


def _limits() -> list[sa.Column[object]]:
    """The columns every tenant table shares (``models.Limits``)."""
    return [
        sa.Column("allowed_models", _json(), nullable=True),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        sa.Column("max_parallel_requests", sa.Integer(), nullable=True),
        sa.Column("max_budget", sa.Float(), nullable=True),
        sa.Column("soft_budget", sa.Float(), nullable=True),
        sa.Column("budget_period", sa.String(16), nullable=True),
        _time("budget_reset_at"),
        sa.Column("metadata", _json(), nullable=True),
        _time("created_at", nullable=False),
        _time("updated_at", nullable=False),
    ]


def _indexes(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column])


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", ID),
        sa.Column("name", sa.String(), nullable=False),
        *_limits(),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
    )
    op.create_table(
        "teams",
        sa.Column("id", ID),
        _owner("teams", "org_id", "organizations", "CASCADE"),
        sa.Column("name", sa.String(), nullable=False),
        *_limits(),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
    )
    _indexes("teams", "org_id")
    op.create_table(
        "users",
        sa.Column("id", ID),
        _owner("users", "org_id", "organizations", "CASCADE"),
        _owner("users", "team_id", "teams", "SET NULL"),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("email", sa.String(), nullable=True),
        *_limits(),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    _indexes("users", "org_id", "team_id")
    op.create_table(
        "api_keys",
        sa.Column("id", ID),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        # A key goes with its owner: left ownerless, it would escape the owner's limits.
        _owner("api_keys", "org_id", "organizations", "CASCADE"),
        _owner("api_keys", "team_id", "teams", "CASCADE"),
        _owner("api_keys", "user_id", "users", "CASCADE"),
        sa.Column("scopes", _json(), nullable=False, server_default=sa.text("'[]'")),
        sa.Column("model_limits", _json(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("signing_secret", sa.String(), nullable=True),
        _time("expires_at"),
        _time("revoked_at"),
        sa.Column("rotated_from", ID, nullable=True),
        _time("last_used_at"),
        *_limits(),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
    _indexes("api_keys", "prefix", "org_id", "team_id", "user_id")
    op.create_table(
        "spend_log",  # no foreign keys: the log outlives deleted tenants
        sa.Column("id", ID),
        sa.Column("request_id", sa.String(), nullable=False),
        _time("created_at", nullable=False),
        sa.Column("key_id", ID, nullable=True),
        sa.Column("user_id", ID, nullable=True),
        sa.Column("team_id", ID, nullable=True),
        sa.Column("org_id", ID, nullable=True),
        sa.Column("principal_kind", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("served_model", sa.String(), nullable=True),
        sa.Column("deployment", sa.String(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_type", sa.String(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_spend_log"),
    )
    _indexes("spend_log", "created_at")
    for column in ("key_id", "user_id", "team_id", "org_id", "model"):
        op.create_index(f"ix_spend_log_{column}_created_at", "spend_log", [column, "created_at"])


def downgrade() -> None:
    for table in ("spend_log", "api_keys", "users", "teams", "organizations"):
        op.drop_table(table)

"""Files and batches: uploaded files, their contents, batch jobs and their answered lines.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

Written by hand, types spelled out (see 0001). File contents live in the database, so that
every replica can serve a file and run a batch whichever replica took the upload.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.String(64)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _time(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", ID, nullable=False),
        sa.Column("owner", sa.String(160), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        _time("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
    )
    op.create_index("ix_files_owner_created_at", "files", ["owner", "created_at"])
    op.create_table(
        "file_contents",
        sa.Column("file_id", ID, sa.ForeignKey("files.id", name="fk_file_contents_file_id",
                                               ondelete="CASCADE"), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "part", name="pk_file_contents"),
    )
    counters = [sa.Column(name, sa.Integer(), nullable=False) for name in (
        "total", "completed", "failed", "input_tokens", "output_tokens", "cached_tokens",
        "expired")]
    op.create_table(
        "batches",
        sa.Column("id", ID, nullable=False),
        sa.Column("owner", sa.String(160), nullable=False),
        sa.Column("run_as", _json(), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", ID, nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("errors", _json(), nullable=True),
        sa.Column("output_file_id", ID, nullable=True),
        sa.Column("error_file_id", ID, nullable=True),
        _time("created_at", nullable=False),
        _time("expires_at", nullable=False),
        *(_time(name) for name in ("in_progress_at", "finalizing_at", "completed_at",
                                   "failed_at", "expired_at", "cancelling_at", "cancelled_at")),
        *counters,
        sa.Column("metadata", _json(), nullable=True),
        sa.Column("ending", sa.String(16), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", ID, nullable=True),
        _time("lease_until"),
        sa.PrimaryKeyConstraint("id", name="pk_batches"),
    )
    op.create_index("ix_batches_owner_created_at", "batches", ["owner", "created_at"])
    op.create_index("ix_batches_status_created_at", "batches", ["status", "created_at"])
    op.create_table(
        "batch_items",
        sa.Column("batch_id", ID, sa.ForeignKey("batches.id", name="fk_batch_items_batch_id",
                                                ondelete="CASCADE"), nullable=False),
        sa.Column("line", sa.Integer(), nullable=False),
        sa.Column("custom_id", sa.String(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "line", name="pk_batch_items"),
    )


def downgrade() -> None:
    op.drop_table("batch_items")
    op.drop_index("ix_batches_status_created_at", table_name="batches")
    op.drop_index("ix_batches_owner_created_at", table_name="batches")
    op.drop_table("batches")
    op.drop_table("file_contents")
    op.drop_index("ix_files_owner_created_at", table_name="files")
    op.drop_table("files")

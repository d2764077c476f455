"""Vector stores: stores, their files, and the files' chunks with their embeddings.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Written by hand, types spelled out (see 0001). Embeddings are float32 bytes: searched in
each process's memory (numpy), so neither database needs a vector extension.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.String(64)


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _time(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "vector_stores",
        sa.Column("id", ID, nullable=False),
        sa.Column("owner", sa.String(160), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("embedding_model", sa.String(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("usage_bytes", sa.Integer(), nullable=False),
        sa.Column("metadata", _json(), nullable=True),
        _time("created_at", nullable=False),
        _time("last_active_at"),
        sa.PrimaryKeyConstraint("id", name="pk_vector_stores"),
    )
    op.create_index("ix_vector_stores_owner_created_at", "vector_stores",
                    ["owner", "created_at"])
    op.create_table(
        "vector_store_files",
        sa.Column("vector_store_id", ID, sa.ForeignKey(
            "vector_stores.id", name="fk_vector_store_files_vector_store_id",
            ondelete="CASCADE"), nullable=False),
        sa.Column("file_id", ID, nullable=False),
        sa.Column("filename", sa.String(), nullable=False),
        sa.Column("run_as", _json(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", _json(), nullable=True),
        sa.Column("usage_bytes", sa.Integer(), nullable=False),
        sa.Column("chunk_tokens", sa.Integer(), nullable=False),
        sa.Column("overlap_tokens", sa.Integer(), nullable=False),
        sa.Column("attributes", _json(), nullable=True),
        _time("created_at", nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", ID, nullable=True),
        _time("lease_until"),
        sa.PrimaryKeyConstraint("vector_store_id", "file_id", name="pk_vector_store_files"),
    )
    op.create_index("ix_vector_store_files_status_created_at", "vector_store_files",
                    ["status", "created_at"])
    op.create_table(
        "vector_chunks",
        sa.Column("vector_store_id", ID, nullable=False),
        sa.Column("file_id", ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vector_store_id", "file_id"],
            ["vector_store_files.vector_store_id", "vector_store_files.file_id"],
            name="fk_vector_chunks_vector_store_id", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("vector_store_id", "file_id", "position",
                                name="pk_vector_chunks"),
    )


def downgrade() -> None:
    op.drop_table("vector_chunks")
    op.drop_index("ix_vector_store_files_status_created_at", table_name="vector_store_files")
    op.drop_table("vector_store_files")
    op.drop_index("ix_vector_stores_owner_created_at", table_name="vector_stores")
    op.drop_table("vector_stores")

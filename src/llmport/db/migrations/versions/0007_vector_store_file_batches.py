"""Vector store file batches (/v1/vector_stores/{id}/file_batches).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

Written by hand, types spelled out (see 0001).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "vector_store_file_batches",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("vector_store_id", sa.String(64), sa.ForeignKey(
            "vector_stores.id", name="fk_vector_store_file_batches_vector_store_id",
            ondelete="CASCADE"), nullable=False),
        sa.Column("file_ids", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_vector_store_file_batches"),
    )
    op.create_index("ix_vector_store_file_batches_vector_store_id",
                    "vector_store_file_batches", ["vector_store_id"])


def downgrade() -> None:
    op.drop_index("ix_vector_store_file_batches_vector_store_id",
                  table_name="vector_store_file_batches")
    op.drop_table("vector_store_file_batches")

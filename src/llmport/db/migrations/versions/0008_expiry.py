"""Expiry: files' (``expires_after`` at upload), batches' for their output files, and
vector stores' (``expires_after``, days after their last activity).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

Written by hand, types spelled out (see 0001).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("files", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_files_expires_at", "files", ["expires_at"])
    op.add_column("batches", sa.Column("output_expires_in", sa.Integer(), nullable=True))
    op.add_column("vector_stores", sa.Column("expires_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("vector_stores", "expires_days")
    op.drop_column("batches", "output_expires_in")
    op.drop_index("ix_files_expires_at", table_name="files")
    op.drop_column("files", "expires_at")

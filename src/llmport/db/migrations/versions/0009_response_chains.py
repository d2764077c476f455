"""Stored responses as chains: a response continuing another (``previous_response_id``)
keeps only what its turn added, and names the response before it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07

Written by hand, types spelled out (see 0001). Rows from before keep their whole history
(``previous_id`` NULL), which is what a chain's first link holds. A downgrade leaves the
rows stored since then with their own turn only (continuing one then sends that turn
alone).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("responses", sa.Column("previous_id", sa.String(64), nullable=True))
    op.create_index("ix_responses_previous_id", "responses", ["previous_id"])


def downgrade() -> None:
    op.drop_index("ix_responses_previous_id", table_name="responses")
    op.drop_column("responses", "previous_id")

"""Conversations and their items (/v1/conversations, and responses that continue them).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Written by hand, types spelled out (see 0001).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(160), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metadata", _json(), nullable=True),
        sa.Column("next_position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
    )
    op.create_index("ix_conversations_owner_created_at", "conversations",
                    ["owner", "created_at"])
    op.create_table(
        "conversation_items",
        sa.Column("conversation_id", sa.String(64), sa.ForeignKey(
            "conversations.id", name="fk_conversation_items_conversation_id",
            ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("item", _json(), nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "position", name="pk_conversation_items"),
    )
    op.create_index("ix_conversation_items_conversation_id_item_id", "conversation_items",
                    ["conversation_id", "item_id"])


def downgrade() -> None:
    op.drop_index("ix_conversation_items_conversation_id_item_id",
                  table_name="conversation_items")
    op.drop_table("conversation_items")
    op.drop_index("ix_conversations_owner_created_at", table_name="conversations")
    op.drop_table("conversations")

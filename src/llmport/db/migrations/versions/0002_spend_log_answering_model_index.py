"""The spend log's model index on the model that answered.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06

The usage reports filter by ``coalesce(served_model, model)`` (the model that answered,
after fallbacks); an index on ``(model, created_at)`` could not serve that filter, so a
report for one model read the whole log. The expression index replaces it (one index per
insert, as before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_spend_log_model_created_at", table_name="spend_log")
    op.create_index("ix_spend_log_answering_model_created_at", "spend_log",
                    [sa.text("coalesce(served_model, model)"), "created_at"])


def downgrade() -> None:
    op.drop_index("ix_spend_log_answering_model_created_at", table_name="spend_log")
    op.create_index("ix_spend_log_model_created_at", "spend_log", ["model", "created_at"])

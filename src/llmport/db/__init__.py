"""Persistence: tenants and the spend log in SQLite or PostgreSQL (SQLAlchemy 2, Alembic)."""

from __future__ import annotations

from llmport.db.database import Database, Kind
from llmport.db.models import (
    ApiKey,
    Base,
    Organization,
    SpendLog,
    Team,
    User,
    new_id,
)

__all__ = ["ApiKey", "Base", "Database", "Kind", "Organization", "SpendLog", "Team", "User",
           "new_id"]

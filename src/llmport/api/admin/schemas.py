"""The admin API's request and response bodies.

Every tenant level (organisation, team, user, key) takes the same limits; the API
calls the model allow-list ``models`` (the column is ``allowed_models``) and the
free-form ``metadata`` (the attribute is ``meta``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmport.db.models import as_utc

Period = Literal["daily", "weekly", "monthly", "total"]
RENAMED = {"models": "allowed_models", "metadata": "meta"}
INT32 = 2_147_483_647  # the limit columns are 32-bit integers


TEN_YEARS_S = 10 * 366 * 86_400  # a grace past this overflows no date, and serves no one


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def columns(self) -> dict[str, Any]:
        """The fields the client actually sent, under their column names."""
        return {RENAMED.get(k, k): v for k, v in self.model_dump(exclude_unset=True).items()}


class LimitsIn(Body):
    models: list[str] | None = Field(default=None, description="allowed models; null = all")
    rpm_limit: int | None = Field(default=None, ge=1, le=INT32, description="requests per minute")
    tpm_limit: int | None = Field(default=None, ge=1, le=INT32, description="tokens per minute")
    max_parallel_requests: int | None = Field(default=None, ge=1, le=INT32)
    max_budget: float | None = Field(default=None, ge=0, description="US$ per budget_period")
    soft_budget: float | None = Field(default=None, ge=0, description="US$: alert only")
    budget_period: Period | None = Field(default=None, description="default: total")
    metadata: dict[str, Any] | None = None


class OrgIn(LimitsIn):
    name: str = Field(min_length=1)


class OrgPatch(LimitsIn):
    name: str | None = Field(default=None, min_length=1)


class TeamIn(LimitsIn):
    name: str = Field(min_length=1)
    org_id: str | None = None


class TeamPatch(LimitsIn):
    name: str | None = Field(default=None, min_length=1)


class UserIn(LimitsIn):
    name: str | None = None
    email: str | None = None
    org_id: str | None = None
    team_id: str | None = None


class UserPatch(LimitsIn):
    name: str | None = None
    email: str | None = None
    team_id: str | None = None


class ModelLimits(Body):
    rpm_limit: int | None = Field(default=None, ge=1, le=INT32)
    tpm_limit: int | None = Field(default=None, ge=1, le=INT32)
    max_parallel_requests: int | None = Field(default=None, ge=1, le=INT32)


class KeyPatch(LimitsIn):
    name: str | None = None
    expires_at: datetime | None = None
    scopes: list[Literal["admin"]] | None = Field(default=None, description=(
        "['admin'] lets the key use the admin API"))
    model_limits: dict[str, ModelLimits] | None = Field(default=None, description=(
        "per-model limits of this key, e.g. {'gpt-4o': {'rpm_limit': 10}}"))
    priority: int | None = Field(default=None, ge=-1000, le=1000, description=(
        "admission priority (higher first)"))

    @field_validator("expires_at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        """The time in UTC (no offset: UTC), which must still be a date (years 1 to 9999)."""
        if value is None:
            return None
        try:
            return as_utc(value)
        except OverflowError:
            raise ValueError("the time in UTC is outside the years 1 to 9999") from None


class KeyIn(KeyPatch):
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    require_signature: bool = Field(default=False, description=(
        "requests must carry an HMAC signature made with the returned signing_secret"))


class RotateIn(Body):
    grace_seconds: float = Field(default=0, ge=0, le=TEN_YEARS_S, description=(
        "the old key keeps working this long (0: revoked at once; at most ten years)"))


class BudgetResetIn(Body):
    kind: Literal["keys", "users", "teams", "orgs"]
    id: str


LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget",
                "soft_budget", "budget_period", "budget_reset_at")
PUBLIC_FIELDS = {
    "orgs": ("id", "name"),
    "teams": ("id", "org_id", "name"),
    "users": ("id", "org_id", "team_id", "name", "email"),
    "keys": ("id", "prefix", "name", "org_id", "team_id", "user_id", "scopes", "model_limits",
             "priority", "expires_at", "revoked_at", "rotated_from", "last_used_at"),
}


def row_out(kind: str, row: Any) -> dict[str, Any]:
    """A row as the API shows it (never a key's hash or signing secret)."""
    out: dict[str, Any] = {"object": kind[:-1] if kind != "keys" else "api_key"}
    for name in PUBLIC_FIELDS[kind]:
        out[name] = getattr(row, name)
    out["models"] = row.allowed_models
    for name in LIMIT_FIELDS:
        out[name] = getattr(row, name)
    if kind == "keys":
        out["require_signature"] = row.signing_secret is not None
    out["metadata"] = row.meta
    out["created_at"], out["updated_at"] = row.created_at, row.updated_at
    return out

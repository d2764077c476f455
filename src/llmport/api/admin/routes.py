"""``/admin``: organisations, teams, users and API keys; budget resets.

Every route needs the master key or a key with the ``admin`` scope. A change to a
tenant is pushed to every replica's principal cache at once; a new key's secret
(and signing secret) is shown in the creation response only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from llmport.accounting.budgets import budget_since
from llmport.api.admin.schemas import (
    BudgetResetIn,
    KeyIn,
    KeyPatch,
    OrgIn,
    OrgPatch,
    RotateIn,
    TeamIn,
    TeamPatch,
    UserIn,
    UserPatch,
    row_out,
)
from llmport.api.admin.usage import MAX_OFFSET, usage_router
from llmport.db.database import Database, Kind
from llmport.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from llmport.gateway.context import CallContext
from llmport.gateway.gateway import Gateway
from llmport.tenancy.keys import generate_key
from llmport.tenancy.principals import principal_from_rows
from llmport.tenancy.signing import generate_signing_secret
from llmport.types import Endpoint, Principal

PARENTS = {"org_id": "orgs", "team_id": "teams", "user_id": "users"}
TAG = "admin"


def admin_router(gateway: Gateway) -> APIRouter:
    async def require_admin(request: Request) -> Principal:
        if gateway.resolver is None:
            raise AuthenticationError("The admin API needs auth.master_key in the config.",
                                      code="admin_disabled")
        ctx = CallContext("admin", Endpoint.CHAT, {}, None, "", headers=request.scope["headers"])
        principal = await gateway.authenticator.authenticate(ctx)
        if not principal.is_admin:
            raise PermissionDeniedError("This key may not use the admin API (it needs the "
                                        "master key or the 'admin' scope).", code="not_admin")
        return principal

    router = APIRouter(prefix="/admin", tags=[TAG], dependencies=[Depends(require_admin)])
    db = _database(gateway)
    _tenant_routes(router, gateway, db, "orgs", OrgIn, OrgPatch)
    _tenant_routes(router, gateway, db, "teams", TeamIn, TeamPatch)
    _tenant_routes(router, gateway, db, "users", UserIn, UserPatch)
    _key_routes(router, gateway, db)

    @router.post("/budgets/reset", summary="Start a budget afresh (earlier spend stops counting)")
    async def reset_budget(body: BudgetResetIn) -> dict[str, Any]:
        row = await db.update(body.kind, body.id, {"budget_reset_at": _now()})
        if row is None:
            raise NotFoundError(f"No {body.kind[:-1]} with id {body.id!r}.")
        gateway.budgets.forget()
        await _invalidate(gateway, body.kind, row)
        return row_out(body.kind, row)

    router.include_router(usage_router(gateway, db))
    return router


def _tenant_routes(router: APIRouter, gateway: Gateway, db: Database, kind: Kind,
                   create: type[BaseModel], patch: type[BaseModel]) -> None:
    singular = kind[:-1]

    async def create_row(body: Any) -> dict[str, Any]:
        fields = body.columns()
        await _check_parents(db, fields)
        with _unique(singular):
            return row_out(kind, await db.create(kind, fields))

    async def list_rows(org_id: str | None = None, team_id: str | None = None,
                        limit: int = Query(100, ge=1, le=1000),
                        offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict[str, Any]:
        filters = {k: v for k, v in (("org_id", org_id), ("team_id", team_id))
                   if v is not None and (k != "team_id" or kind == "users")}
        rows = await db.list(kind, filters=filters, limit=limit, offset=offset)
        return {"object": "list", "data": [row_out(kind, r) for r in rows]}

    async def get_row(id: str) -> dict[str, Any]:
        return row_out(kind, await _get(db, kind, id))

    async def patch_row(id: str, body: Any) -> dict[str, Any]:
        fields = body.columns()
        await _check_parents(db, fields)
        with _unique(singular):
            row = await db.update(kind, id, fields)
        if row is None:
            raise NotFoundError(f"No {singular} with id {id!r}.")
        await _invalidate(gateway, kind, row)
        return row_out(kind, row)

    async def delete_row(id: str) -> dict[str, Any]:
        if not await db.delete(kind, id):
            raise NotFoundError(f"No {singular} with id {id!r}.")
        await _invalidate(gateway, kind, None)
        return {"id": id, "object": singular, "deleted": True}

    create_row.__annotations__["body"] = create
    patch_row.__annotations__["body"] = patch
    router.add_api_route(f"/{kind}", create_row, methods=["POST"], status_code=201,
                         summary=f"Create a {singular}")
    router.add_api_route(f"/{kind}", list_rows, methods=["GET"], summary=f"List {kind}")
    router.add_api_route(f"/{kind}/{{id}}", get_row, methods=["GET"], summary=f"Get a {singular}")
    router.add_api_route(f"/{kind}/{{id}}", patch_row, methods=["PATCH"],
                         summary=f"Update a {singular}")
    router.add_api_route(f"/{kind}/{{id}}", delete_row, methods=["DELETE"],
                         summary=f"Delete a {singular} (with what it owns)")


def _key_routes(router: APIRouter, gateway: Gateway, db: Database) -> None:
    @router.post("/keys", status_code=201, summary="Create an API key (its secret is shown once)")
    async def create_key(body: KeyIn) -> dict[str, Any]:
        fields = body.columns()
        signed = fields.pop("require_signature", False)
        await _check_parents(db, fields)
        await _inherit_owner(db, fields)
        return await _issue(db, fields, signed)

    @router.get("/keys", summary="List API keys (never their secrets)")
    async def list_keys(org_id: str | None = None, team_id: str | None = None,
                        user_id: str | None = None, limit: int = Query(100, ge=1, le=1000),
                        offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict[str, Any]:
        filters = {k: v for k, v in (("org_id", org_id), ("team_id", team_id),
                                     ("user_id", user_id)) if v is not None}
        rows = await db.list("keys", filters=filters, limit=limit, offset=offset)
        return {"object": "list", "data": [row_out("keys", r) for r in rows]}

    @router.get("/keys/{id}", summary="An API key, with its spend in the current budget period")
    async def get_key(id: str) -> dict[str, Any]:
        row = await _get(db, "keys", id)
        out = row_out("keys", row)
        org, team, user = await db.principal_rows(row)
        quota = next((q for q in principal_from_rows(row, org, team, user).quotas
                      if q.scope == f"key:{id}"), None)
        since = budget_since(quota, _now().timestamp()) if quota else None
        if gateway.journal is not None:
            await gateway.journal.flush()
        out["spend"] = await db.spend_total(
            "key_id", id, None if since is None else dt.datetime.fromtimestamp(since, dt.UTC))
        return out

    @router.patch("/keys/{id}", summary="Change an API key's limits, models or expiry")
    async def patch_key(id: str, body: KeyPatch) -> dict[str, Any]:
        row = await db.update("keys", id, body.columns())
        if row is None:
            raise NotFoundError(f"No key with id {id!r}.")
        await _invalidate(gateway, "keys", row)
        return row_out("keys", row)

    @router.delete("/keys/{id}", summary="Revoke an API key (refused everywhere within a second)")
    async def revoke_key(id: str) -> dict[str, Any]:
        row = await _get(db, "keys", id)
        if row.revoked_at is None:
            row = await db.update("keys", id, {"revoked_at": _now()})
        await _invalidate(gateway, "keys", row)
        return row_out("keys", row)

    @router.post("/keys/{id}/rotate", status_code=201,
                 summary="Replace an API key with a new secret and the same settings")
    async def rotate_key(id: str, body: RotateIn | None = None) -> dict[str, Any]:
        old = await _get(db, "keys", id)
        if old.revoked_at is not None:
            raise InvalidRequestError("A revoked key cannot be rotated.", code="key_revoked")
        copied = ("name", "org_id", "team_id", "user_id", "scopes", "model_limits", "priority",
                  "expires_at", "allowed_models", "rpm_limit", "tpm_limit",
                  "max_parallel_requests", "max_budget", "soft_budget", "budget_period", "meta")
        fields = {name: getattr(old, name) for name in copied}
        fields["rotated_from"] = old.id
        issued = await _issue(db, fields, old.signing_secret is not None)
        grace = (body or RotateIn()).grace_seconds
        until = _now() + dt.timedelta(seconds=grace)
        change = ({"revoked_at": _now()} if grace == 0 else
                  {"expires_at": until if old.expires_at is None else min(old.expires_at, until)})
        old = await db.update("keys", id, change)
        await _invalidate(gateway, "keys", old)
        return issued


async def _issue(db: Database, fields: dict[str, Any], signed: bool) -> dict[str, Any]:
    secret, prefix, digest = generate_key()
    signing_secret = generate_signing_secret() if signed else None
    row = await db.create("keys", {**fields, "key_hash": digest, "prefix": prefix,
                                   "signing_secret": signing_secret})
    out = {**row_out("keys", row), "key": secret}
    if signing_secret is not None:
        out["signing_secret"] = signing_secret
    return out


async def _check_parents(db: Database, fields: dict[str, Any]) -> None:
    for column, kind in PARENTS.items():
        value = fields.get(column)
        if value is not None and await db.get(kind, value) is None:  # type: ignore[arg-type]
            raise InvalidRequestError(f"No {kind[:-1]} with id {value!r}.", param=column,
                                      code="unknown_owner")


async def _inherit_owner(db: Database, fields: dict[str, Any]) -> None:
    """A key made for a user belongs to that user's team and org unless told otherwise."""
    if fields.get("user_id"):
        user = await db.get("users", fields["user_id"])
        fields.setdefault("team_id", getattr(user, "team_id", None))
        fields.setdefault("org_id", getattr(user, "org_id", None))
    if fields.get("team_id") and not fields.get("org_id"):
        team = await db.get("teams", fields["team_id"])
        fields["org_id"] = getattr(team, "org_id", None)


async def _get(db: Database, kind: Kind, id: str) -> Any:
    row = await db.get(kind, id)
    if row is None:
        raise NotFoundError(f"No {kind[:-1]} with id {id!r}.")
    return row


async def _invalidate(gateway: Gateway, kind: str, row: Any) -> None:
    resolver = gateway.resolver
    if resolver is not None:
        await resolver.invalidate(row.key_hash if kind == "keys" and row is not None else None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _database(gateway: Gateway) -> Database:
    if gateway.db is None:
        raise RuntimeError("the admin API needs the database")
    return gateway.db


@contextlib.contextmanager
def _unique(singular: str) -> Iterator[None]:
    """A unique column already holding the value (a user's email) is a 409, not a crash."""
    try:
        yield
    except IntegrityError as error:
        raise ConflictError(f"Another {singular} already has this value of a field that must "
                            f"be unique (a user's email): {error.orig}") from None

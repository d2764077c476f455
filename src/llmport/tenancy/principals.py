"""API keys and JWTs → ``Principal``: from a short-lived cache, the database only on a miss.

In the steady state a request costs one SHA-256 and a dict lookup. A cached entry
lives ``key_cache_ttl`` seconds; when a key, user, team or org changes, the admin
API publishes an invalidation on the shared store, so every replica drops its copy
at once (the TTL only bounds a lost message). Concurrent misses on one key share
one database read. Unknown keys are cached too (briefly), so a flood of bad keys
cannot turn into a flood of queries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from llmport.errors import AuthenticationError
from llmport.tenancy.jwt_config import JWTError, JWTIdentity
from llmport.tenancy.keys import hash_key
from llmport.tenancy.last_used import LastUsed
from llmport.types import Principal, Quota

if TYPE_CHECKING:
    from llmport.db.database import Database
    from llmport.stores.base import StateStore
    from llmport.tenancy.jwt_auth import JWTVerifier

CHANNEL = "principals"
UNKNOWN_TTL = 1.0  # seconds an unknown key is remembered as unknown
ADMIN_SCOPE = "admin"
LEVELS = (("key", "key_id"), ("user", "user_id"), ("team", "team_id"), ("org", "org_id"))


class PrincipalResolver:
    def __init__(self, db: Database, store: StateStore, jwt: JWTVerifier | None,
                 ttl: float, last_used_interval: float = 30.0) -> None:
        self.db = db
        self.last_used = LastUsed(db, last_used_interval)
        self.store = store
        self.jwt = jwt
        self.ttl = ttl
        # key hash (or "jwt:org|team|user") → (expires, principal or None, why refused)
        self._cache: dict[str, tuple[float, Principal | None, str]] = {}
        self._loading: dict[str, asyncio.Future[tuple[Principal | None, str]]] = {}
        # Entries cached by key id (batches): an invalidation names a key by its hash, so
        # any invalidation drops all of these (a few: one per running batch).
        self._by_id: set[str] = set()

    async def start(self) -> None:
        await self.store.subscribe(CHANNEL, self._on_invalidation)
        self.last_used.start()

    async def aclose(self) -> None:
        await self.last_used.aclose()

    def _on_invalidation(self, message: bytes) -> None:
        if message == b"*":
            self._cache.clear()
        else:
            self._cache.pop(message.decode(), None)
            for cache_key in self._by_id:
                self._cache.pop(cache_key, None)
        self._by_id.clear()

    async def invalidate(self, key_hash: str | None = None) -> None:
        """Drop a key's cached principal (None: every principal) here and on every replica."""
        message = b"*" if key_hash is None else key_hash.encode()
        self._on_invalidation(message)
        await self.store.publish(CHANNEL, message)

    async def from_key(self, token: bytes) -> Principal:
        return await self.from_key_hash(hash_key(token))

    async def from_key_hash(self, digest: str) -> Principal:
        """The principal of the key whose SHA-256 (hex) is ``digest``."""
        principal, why = await self._cached(digest, self._load_key)
        if principal is None:
            raise AuthenticationError(why or "Incorrect API key provided.")
        if principal.expires_at is not None and principal.expires_at <= time.time():
            raise AuthenticationError("This API key has expired.", code="expired_api_key")
        self.last_used.note(principal.id)
        return principal

    async def from_jwt(self, token: bytes) -> Principal:
        if self.jwt is None:
            raise AuthenticationError("Incorrect API key provided.")
        try:
            identity = self.jwt.verify(token.decode("ascii", "replace"))
        except JWTError as exc:
            raise AuthenticationError(f"Invalid token: {exc}", code="invalid_token") from None
        return await self.from_identity(identity)

    async def from_identity(self, identity: JWTIdentity) -> Principal:
        """The principal of a verified token's identity (also a batch's, after its token
        has expired: the batch was authorised when it was made)."""
        entity = f"jwt:{identity.org_id}|{identity.team_id}|{identity.user_id}"
        base, _ = await self._cached(entity, lambda _: self._load_entities(identity))
        assert base is not None
        return _with_identity(base, identity)

    async def from_key_id(self, key_id: str) -> Principal:
        """The principal of the key with id ``key_id`` (a batch runs as the key that made
        it): refused as the key itself would be, when revoked, expired or deleted."""
        self._by_id.add(f"id:{key_id}")
        principal, why = await self._cached(f"id:{key_id}", self._load_key_id)
        if principal is None:
            raise AuthenticationError(why)
        if principal.expires_at is not None and principal.expires_at <= time.time():
            raise AuthenticationError("This API key has expired.", code="expired_api_key")
        return principal

    async def _cached(self, cache_key: str, load: Any) -> tuple[Principal | None, str]:
        entry = self._cache.get(cache_key)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1], entry[2]
        pending = self._loading.get(cache_key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[Principal | None, str]] = (
            asyncio.get_running_loop().create_future())
        self._loading[cache_key] = future
        try:
            principal, why = await load(cache_key)
            ttl = self.ttl if principal is not None else min(self.ttl, UNKNOWN_TTL)
            self._cache[cache_key] = (time.monotonic() + ttl, principal, why)
            future.set_result((principal, why))
            return principal, why
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            del self._loading[cache_key]

    async def _load_key(self, digest: str) -> tuple[Principal | None, str]:
        row = await self.db.key_by_hash(digest)
        if row is None:
            return None, "Incorrect API key provided."
        if row.revoked_at is not None:
            return None, "This API key has been revoked."
        org, team, user = await self.db.principal_rows(row)
        return principal_from_rows(row, org, team, user, await self.db.key_root(row)), ""

    async def _load_key_id(self, cache_key: str) -> tuple[Principal | None, str]:
        row = await self.db.get("keys", cache_key.removeprefix("id:"))
        if row is None:
            return None, "The API key this batch runs as has been deleted."
        if row.revoked_at is not None:
            return None, "This API key has been revoked."
        org, team, user = await self.db.principal_rows(row)
        return principal_from_rows(row, org, team, user, await self.db.key_root(row)), ""

    async def _load_entities(self, identity: JWTIdentity) -> tuple[Principal | None, str]:
        org, team, user = await self.db.entity_rows(identity.org_id, identity.team_id,
                                                    identity.user_id)
        return principal_from_rows(None, org, team, user), ""


def principal_from_rows(key: Any, org: Any, team: Any, user: Any,
                        owner_id: str | None = None) -> Principal:
    """A principal from a key (or None, for a JWT) and the rows of its user, team and org;
    ``owner_id``: the first key of the key's rotation chain."""
    rows = {"key": key, "user": user, "team": team, "org": org}
    allowed: frozenset[str] | None = None
    for row in rows.values():
        models = getattr(row, "allowed_models", None) if row is not None else None
        if models is not None:
            allowed = frozenset(models) if allowed is None else allowed & frozenset(models)
    quotas = tuple(q for level, column in LEVELS if rows[level] is not None
                   for q in [_quota(f"{level}:{rows[level].id}", column, rows[level].id,
                                    rows[level])] if q.limited)
    model_quotas: tuple[tuple[str, Quota], ...] = ()
    scopes: frozenset[str] = frozenset()
    if key is not None:
        model_quotas = tuple(
            (model, _quota(f"key:{key.id}:model:{model}", "key_id", key.id, None,
                           rpm=limits.get("rpm_limit"), tpm=limits.get("tpm_limit"),
                           parallel=limits.get("max_parallel_requests")))
            for model, limits in (key.model_limits or {}).items())
        scopes = frozenset(key.scopes or ())
    return Principal(
        id=key.id if key is not None else "jwt",
        kind="key" if key is not None else "jwt",
        name=getattr(key, "name", None),
        org_id=getattr(org, "id", None) or getattr(key, "org_id", None),
        team_id=getattr(team, "id", None) or getattr(key, "team_id", None),
        user_id=getattr(user, "id", None) or getattr(key, "user_id", None),
        allowed_models=allowed,
        is_admin=ADMIN_SCOPE in scopes,
        priority=(getattr(key, "priority", None) or 0),
        key_id=getattr(key, "id", None),
        quotas=quotas,
        model_quotas=model_quotas,
        expires_at=_epoch(getattr(key, "expires_at", None)),
        signing_secret=getattr(key, "signing_secret", None),
        scopes=scopes,
        owner_id=owner_id,
    )


def _quota(scope: str, column: str, entity_id: str, row: Any, **given: Any) -> Quota:
    if row is None:
        return Quota(scope=scope, column=column, entity_id=entity_id, **given)
    return Quota(scope=scope, column=column, entity_id=entity_id, rpm=row.rpm_limit,
                 tpm=row.tpm_limit, parallel=row.max_parallel_requests,
                 max_budget=row.max_budget, soft_budget=row.soft_budget,
                 budget_period=row.budget_period or "total",
                 budget_reset_at=_epoch(row.budget_reset_at))


def _with_identity(base: Principal, identity: JWTIdentity) -> Principal:
    """A JWT principal: its tenants' limits, narrowed by the token's own claims."""
    allowed = base.allowed_models
    if identity.models is not None:
        allowed = identity.models if allowed is None else allowed & identity.models
    return Principal(
        id=f"jwt:{identity.subject}", kind="jwt", name=identity.subject,
        org_id=identity.org_id, team_id=identity.team_id, user_id=identity.user_id,
        allowed_models=allowed, is_admin=ADMIN_SCOPE in identity.scopes,
        quotas=base.quotas, expires_at=identity.expires_at, scopes=identity.scopes)


def _epoch(value: dt.datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they are stored as UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()

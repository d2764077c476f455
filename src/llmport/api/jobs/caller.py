"""Who is calling a files or batches route: authenticated as any proxied request is."""

from __future__ import annotations

import hashlib

from fastapi import Request

from llmport.api.asgi import read_body, request_target
from llmport.gateway.context import CallContext
from llmport.gateway.gateway import Gateway
from llmport.types import Endpoint, Principal

JSON_LIMIT = 1 << 20  # a batch's creation request is a few hundred bytes


async def caller(gateway: Gateway, request: Request) -> CallContext:
    """The caller, in a context whose ``principal`` is set (401 for a missing or wrong key).
    Authenticated before the body is read: a stranger's upload is refused unread."""
    ctx = CallContext("", Endpoint.CHAT, {}, None, "", headers=request.scope["headers"])
    await gateway.authenticator.authenticate(ctx)
    return ctx


async def signed_body(gateway: Gateway, request: Request, ctx: CallContext,
                      limit: int) -> bytes:
    """The request's body (413 past ``limit`` bytes, counted as they arrive); a signing
    key's request must be signed over it."""
    body = await read_body(request.receive, limit) if request.method in ("POST", "PUT") else b""
    if ctx.principal.signing_secret is not None:
        await gateway.authenticator.check_signature(ctx, request.method,
                                                    request_target(request.scope), body)
    return body


async def caller_owner(gateway: Gateway, request: Request) -> str:
    """The caller's owner id, for a route that reads no body (GET, DELETE, a cancel): a
    body sent anyway is read (up to ``JSON_LIMIT``) and covered by the signature check."""
    ctx = await caller(gateway, request)
    await signed_body(gateway, request, ctx, JSON_LIMIT)
    return owner_of(ctx.principal)


def owner_of(principal: Principal) -> str:
    """The id files, batches, stores, responses and conversations are kept under: only the
    same principal sees them (a key and the keys rotated from it count as one). A token's
    subject may exist in several organisations (or teams), so a JWT principal's owner is
    its subject within them (hashed: subjects can be long)."""
    if principal.kind != "jwt":
        return principal.owner_id or principal.id  # a key's: its rotation chain's first
    scope = "|".join(str(part) for part in (principal.org_id, principal.team_id,
                                             principal.user_id, principal.name))
    return "jwt:" + hashlib.sha256(scope.encode()).hexdigest()[:40]

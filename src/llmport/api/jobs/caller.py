"""Who is calling a files or batches route: authenticated as any proxied request is."""

from __future__ import annotations

import hashlib
from collections.abc import MutableMapping
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData

from llmport.api.asgi import body_piece, read_body, request_target
from llmport.errors import InvalidRequestError, LLMPortError
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


async def signed_form(gateway: Gateway, request: Request, ctx: CallContext, limit: int,
                      max_fields: int) -> FormData:
    """The request's multipart form (one file), parsed as the body arrives: the file is
    spooled to a temporary file, never held whole in memory (413 past ``limit`` bytes of
    body, counted as they arrive); a signing key's request must be signed over the body,
    fed to the signature piece by piece. Close the form when done with its file."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError("Upload a file as multipart/form-data with the fields "
                                  "'file' and 'purpose'.", code="invalid_content_type")
    verifier = gateway.authenticator.signature(ctx, request.method,
                                               request_target(request.scope))
    size = 0

    async def receive() -> MutableMapping[str, Any]:
        nonlocal size
        message = await request.receive()
        piece, size = body_piece(message, size, limit)
        if verifier is not None:
            verifier.update(piece)
        return message

    try:
        form = await Request(request.scope, receive).form(max_files=1, max_fields=max_fields)
    except LLMPortError:
        raise
    except Exception as exc:  # python-multipart's and Starlette's parse errors
        raise InvalidRequestError(f"The multipart body could not be read: {exc}",
                                  code="invalid_multipart") from None
    if verifier is not None:
        try:
            await gateway.authenticator.check_signed(ctx, verifier)
        except BaseException:
            await form.close()
            raise
    return form


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

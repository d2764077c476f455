"""Requests the gateway makes on a caller's behalf (a batch's lines, a vector store's
embeddings), run exactly as ``ProxyRoute`` runs a non-streamed request: the whole pipeline
as that caller — allowed models, limits, budget, spend, metrics, logs.

``run_as`` is who such work runs as, kept with it (a batch runs for hours; the caller's
key is looked up again each time, so revoking it stops the work); ``principal_of``
resolves it.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from llmport.api.openai.dialect import OpenAIDialect
from llmport.api.openai.validation import validate_chat, validate_completion, validate_embedding
from llmport.api.proxy import Dialect, run_cleanups
from llmport.errors import AuthenticationError, InvalidRequestError, LLMPortError
from llmport.gateway.context import CallContext
from llmport.policies.auth import MASTER
from llmport.policies.idempotency import KEEP_FOR
from llmport.tenancy.jwt_config import JWTIdentity
from llmport.types import ANONYMOUS, Endpoint, JSONResult, Principal, Usage

if TYPE_CHECKING:
    from llmport.gateway.gateway import Gateway

log = structlog.get_logger("llmport.internal")
DIALECTS = {Endpoint.CHAT: OpenAIDialect(validate_chat),
            Endpoint.COMPLETIONS: OpenAIDialect(validate_completion),
            Endpoint.EMBEDDINGS: OpenAIDialect(validate_embedding)}


@dataclass(slots=True)
class Answer:
    status: int
    body: bytes  # the response as a client would get it: a result or an error envelope
    request_id: str
    usage: Usage | None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error_message(self) -> str:
        """The error envelope's message (for a failed answer)."""
        try:
            return str(orjson.loads(self.body)["error"]["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return self.body.decode("utf-8", "replace")[:500]


async def call(gateway: Gateway, endpoint: Endpoint, body: dict[str, Any],
               principal: Principal | dict[str, Any],
               headers: list[tuple[bytes, bytes]] | None = None,
               dialect: Dialect | None = None, keep_answer_s: float | None = None) -> Answer:
    """``body`` sent to ``endpoint`` as ``principal`` (or as a ``run_as`` record, resolved
    here: a revoked key's request is refused like any other), in ``dialect``'s wire form
    (OpenAI's by default; the answer, or the error, comes in it too). Never streamed.
    ``keep_answer_s``: with an ``Idempotency-Key`` header, how long its answer is needed
    (at most the configured ``idempotency.ttl``)."""
    dialect = dialect or DIALECTS[endpoint]
    ctx = CallContext(f"req_{secrets.token_hex(12)}", endpoint, {}, None, "",
                      headers=headers or [], dialect=dialect.name)
    if keep_answer_s is not None:
        ctx.state[KEEP_FOR] = keep_answer_s
    status: int = 200
    error: BaseException | None = None
    gateway.start_request(ctx)
    try:
        ctx.principal = principal if isinstance(principal, Principal) else \
            await principal_of(gateway, principal)
        ctx.authenticated_at = ctx.started
        dialect.decode(ctx, orjson.dumps(body))
        if ctx.stream:
            raise InvalidRequestError("This request cannot be streamed here.", param="stream",
                                      code="stream_not_supported")
        result = await gateway.handle(ctx)
        if not isinstance(result, JSONResult):  # not asked for; never here
            await result.aclose()
            raise LLMPortError("The answer came as a stream.", code="internal_error")
        status, answer = result.status, dialect.encode(ctx, result)
    except LLMPortError as exc:
        status, error, answer = exc.status_code, exc, dialect.error_body(exc)
    except asyncio.CancelledError as exc:  # shutting down: whoever asked sends it again
        status, error = 499, exc
        raise
    except Exception as exc:  # a bug fails this request, not the caller's whole job
        log.exception("internal request failed", request_id=ctx.request_id)
        status, error = 500, exc
        answer = dialect.error_body(LLMPortError("The gateway failed to process the request.",
                                                 code="internal_error"))
    finally:
        if ctx.cleanups:
            await run_cleanups(ctx)
        ctx.mark_response_start()
        gateway.finish(ctx, status, error)
    return Answer(status, answer, ctx.request_id, ctx.usage)


def run_as(principal: Principal) -> dict[str, Any]:
    """Who work started by ``principal`` runs as, to be kept with it."""
    if principal.kind == "key":
        return {"kind": "key", "key_id": principal.key_id}
    if principal.kind == "jwt":
        return {"kind": "jwt", "subject": principal.name, "org_id": principal.org_id,
                "team_id": principal.team_id, "user_id": principal.user_id,
                "scopes": sorted(principal.scopes),
                "models": None if principal.allowed_models is None
                else sorted(principal.allowed_models)}
    return {"kind": principal.kind}


async def principal_of(gateway: Gateway, who: dict[str, Any]) -> Principal:
    """The principal a ``run_as`` record stands for, as it is now."""
    kind = who.get("kind")
    resolver = gateway.resolver
    open_mode = gateway.authenticator.open_mode
    if kind == "anonymous" and open_mode:
        return ANONYMOUS
    if kind == "master" and not open_mode:
        return MASTER
    if kind == "key" and resolver is not None:
        try:
            return await resolver.from_key_id(who["key_id"])
        except AuthenticationError:  # rotated since? then as the key that replaced it
            successor = await gateway.db.key_successor(who["key_id"]) if gateway.db else None
            if successor is None:
                raise
            return await resolver.from_key_id(successor)
    if kind == "jwt" and resolver is not None:
        models = who.get("models")
        return await resolver.from_identity(JWTIdentity(
            subject=who["subject"], org_id=who.get("org_id"), team_id=who.get("team_id"),
            user_id=who.get("user_id"), scopes=frozenset(who.get("scopes") or ()),
            models=None if models is None else frozenset(models), expires_at=None))
    # Made under another configuration (without keys then, or with a master key no longer
    # set): it does not run as anyone the gateway knows now.
    raise AuthenticationError(f"This work was started as {kind!r}, which this gateway's "
                              "configuration no longer authenticates.", code="run_as_unknown")

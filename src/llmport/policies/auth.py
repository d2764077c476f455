"""Authentication: who is calling, decided before the body is even parsed.

It is the pipeline's gate: an unauthenticated request costs one header scan
and a hash, never a JSON parse. Without a master key the gateway is in open
mode (loopback only, enforced by the CLI) and every caller is anonymous.
Otherwise a caller presents the master key, an API key made by the admin API
(resolved through ``PrincipalResolver``'s cache) or a JWT. A key that requires
signed requests is checked once its body has been read (``check_signature``).
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from llmport.errors import AuthenticationError
from llmport.gateway.context import CallContext
from llmport.tenancy import signing
from llmport.tenancy.keys import hash_key, looks_like_jwt
from llmport.types import ANONYMOUS, Principal

if TYPE_CHECKING:
    from llmport.stores.base import StateStore
    from llmport.tenancy.principals import PrincipalResolver

MASTER = Principal(id="master", kind="master", name="master key", is_admin=True)


def credential(ctx: CallContext) -> bytes | None:
    """The API key a client sent: ``Authorization: Bearer …`` or else ``x-api-key: …``."""
    authorization = ctx.header(b"authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    return ctx.header(b"x-api-key") or None


class Authenticator:
    """Master key, API keys and JWTs; HMAC request signatures for keys that require them."""

    def __init__(self, master_key: str | None, resolver: PrincipalResolver | None = None,
                 store: StateStore | None = None, max_skew_s: float = 300.0) -> None:
        self.open_mode = master_key is None
        self._master_digest = hash_key(master_key) if master_key else ""
        self.resolver = resolver
        self.store = store
        self.max_skew_s = max_skew_s

    async def authenticate(self, ctx: CallContext) -> Principal:
        token = credential(ctx)
        if self.open_mode:
            principal = ANONYMOUS
        elif token is None:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key")
        else:
            digest = hash_key(token)
            if hmac.compare_digest(digest, self._master_digest):
                principal = MASTER
            elif self.resolver is None:
                raise AuthenticationError("Incorrect API key provided.")
            elif looks_like_jwt(token):
                principal = await self.resolver.from_jwt(token)
            else:
                principal = await self.resolver.from_key_hash(digest)
        ctx.principal = principal
        return principal

    async def check_signature(self, ctx: CallContext, method: str, path: str,
                              body: bytes) -> None:
        """Refuse a signing key's request whose signature is missing, stale, wrong or replayed."""
        verifier = self.signature(ctx, method, path)
        if verifier is not None:
            verifier.update(body)
            await self.check_signed(ctx, verifier)

    def signature(self, ctx: CallContext, method: str, path: str) -> signing.Verifier | None:
        """A signing key's signature, its headers checked, to be fed the body as it is read
        (then ``check_signed``); None for a key that does not sign."""
        secret = ctx.principal.signing_secret
        if secret is None:
            return None
        try:
            return signing.Verifier(secret, method, path, ctx.header(signing.TIMESTAMP_HEADER),
                                    ctx.header(signing.SIGNATURE_HEADER), now=time.time(),
                                    max_skew_s=self.max_skew_s)
        except signing.SignatureError as exc:
            raise _refused(exc) from None

    async def check_signed(self, ctx: CallContext, verifier: signing.Verifier) -> None:
        """The body fed to ``verifier`` was signed, and not seen before (a replay)."""
        try:
            token = verifier.finish()
        except signing.SignatureError as exc:
            raise _refused(exc) from None
        if self.store is not None and not await self.store.add_if_absent(
                f"sig:{token}", 2 * self.max_skew_s):
            raise AuthenticationError("Request signature rejected: this request was already "
                                      "received (replay).", code="invalid_signature")


def _refused(exc: signing.SignatureError) -> AuthenticationError:
    return AuthenticationError(f"Request signature rejected: {exc}", code="invalid_signature")

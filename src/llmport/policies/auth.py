"""Authentication: who is calling, decided before the body is even parsed.

It is the pipeline's gate: an unauthenticated request costs one header scan
and a hash, never a JSON parse. Without a master key the gateway is in open
mode (loopback only, enforced by the CLI) and every caller is anonymous.
"""

from __future__ import annotations

import hashlib
import hmac

from llmport.errors import AuthenticationError
from llmport.gateway.context import CallContext
from llmport.types import ANONYMOUS, Principal

MASTER = Principal(id="master", kind="master", name="master key", is_admin=True)


def credential(ctx: CallContext) -> bytes | None:
    """The API key a client sent: ``Authorization: Bearer …`` or ``x-api-key: …``."""
    for key, value in ctx.headers:
        if key == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
        elif key == b"x-api-key" and value:
            return value
    return None


class Authenticator:
    def __init__(self, master_key: str | None) -> None:
        self.open_mode = master_key is None
        self._master_digest = _digest(master_key.encode()) if master_key else b""

    async def authenticate(self, ctx: CallContext) -> Principal:
        token = credential(ctx)
        if self.open_mode:
            principal = ANONYMOUS
        elif token is None:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key")
        elif hmac.compare_digest(_digest(token), self._master_digest):
            principal = MASTER
        else:
            raise AuthenticationError("Incorrect API key provided.")
        ctx.principal = principal
        return principal


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()

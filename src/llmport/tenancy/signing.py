"""Optional HMAC request signing per API key: proof that a request was not altered or replayed.

A key with a signing secret must send two more headers::

    x-llmport-timestamp: 1767225600            (integer epoch seconds)
    x-llmport-signature: v1=<hex HMAC-SHA256(secret, f"{ts}\\n{METHOD}\\n{path}\\n" + body)>

The timestamp bounds how long a captured request stays usable (``max_skew_s``
either way, which also absorbs clock drift); within that window a replay has
the very same signature, so ``verify`` returns it as a token the caller
records for ``2 * max_skew_s`` and refuses to see twice. The ``v1=`` version
leaves room for another scheme without ambiguity. The path is the request
target as sent (including any query string), so the signer and the gateway
sign the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

SIGNATURE_HEADER = b"x-llmport-signature"
TIMESTAMP_HEADER = b"x-llmport-timestamp"
SIGNING_SECRET_PREFIX = "lpsig_"
_VERSION = b"v1="
_HEX_DIGITS = frozenset(b"0123456789abcdef")
_MAX_TIMESTAMP_DIGITS = 12  # epoch seconds until the year 33658

SignatureFailure = Literal["missing", "malformed", "skew", "mismatch"]
_MESSAGES: dict[SignatureFailure, str] = {
    "missing": "This API key requires signed requests: send x-llmport-timestamp and "
               "x-llmport-signature.",
    "malformed": "The request signature headers are malformed.",
    "skew": "The request timestamp is too far from the gateway's clock.",
    "mismatch": "The request signature does not match.",
}


class SignatureError(Exception):
    """A signed request was refused; ``reason`` says why, ``str()`` is safe to show the client."""

    def __init__(self, reason: SignatureFailure) -> None:
        super().__init__(_MESSAGES[reason])
        self.reason: SignatureFailure = reason


def generate_signing_secret() -> str:
    """A new signing secret (256 random bits), shown once like a key."""
    return SIGNING_SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, method: str, path: str, body: bytes, timestamp: int) -> str:
    """The ``x-llmport-signature`` header value a client sends for this request."""
    return (_VERSION + _digest(secret, method, path, body, timestamp).encode()).decode()


def verify(secret: str, method: str, path: str, body: bytes, timestamp: bytes | None,
           signature: bytes | None, *, now: float, max_skew_s: float) -> str:
    """Check a request's signature headers; return its replay-protection token.

    Raises ``SignatureError``. The returned token (the signature's hex) is the
    same for every replay of this request, so the caller stores it for
    ``2 * max_skew_s`` and rejects a request whose token it has seen. The
    digest comparison is constant-time.
    """
    verifier = Verifier(secret, method, path, timestamp, signature, now=now,
                        max_skew_s=max_skew_s)
    verifier.update(body)
    return verifier.finish()


class Verifier:
    """``verify`` for a body read in pieces (a large upload, never whole in memory): the
    headers are checked when it is made (``SignatureError``), each piece of the body is
    fed to ``update`` as it arrives, and ``finish`` compares and returns the token."""

    def __init__(self, secret: str, method: str, path: str, timestamp: bytes | None,
                 signature: bytes | None, *, now: float, max_skew_s: float) -> None:
        if timestamp is None or signature is None:
            raise SignatureError("missing")
        ts = _parse_timestamp(timestamp)
        given = signature.strip().lower()
        if not given.startswith(_VERSION):
            raise SignatureError("malformed")
        given_hex = given[len(_VERSION):]
        if (len(given_hex) != 2 * hashlib.sha256().digest_size
                or not _HEX_DIGITS.issuperset(given_hex)):
            raise SignatureError("malformed")
        if abs(now - ts) > max_skew_s:
            raise SignatureError("skew")
        self._given = given_hex
        self._mac = _mac(secret, method, path, ts)

    def update(self, piece: bytes) -> None:
        self._mac.update(piece)

    def finish(self) -> str:
        if not hmac.compare_digest(self._mac.hexdigest().encode(), self._given):
            raise SignatureError("mismatch")
        return self._given.decode()


def _parse_timestamp(value: bytes) -> int:
    value = value.strip()
    # isdigit on bytes is ASCII-only, so int() sees no signs, spaces, underscores or other digits
    if not value or len(value) > _MAX_TIMESTAMP_DIGITS or not value.isdigit():
        raise SignatureError("malformed")
    return int(value)


def _digest(secret: str, method: str, path: str, body: bytes, timestamp: int) -> str:
    mac = _mac(secret, method, path, timestamp)
    mac.update(body)
    return mac.hexdigest()


def _mac(secret: str, method: str, path: str, timestamp: int) -> hmac.HMAC:
    """The signature's HMAC, before the body."""
    return hmac.new(secret.encode(), f"{timestamp}\n{method.upper()}\n{path}\n".encode(),
                    hashlib.sha256)

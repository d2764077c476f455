"""API keys: how they are made, stored and told apart from JWTs.

A key is ``sk-lp-`` followed by 43 characters of ``secrets.token_urlsafe(32)``,
256 bits from the OS's CSPRNG. Only its SHA-256 is stored, with the first 12
characters (``sk-lp-`` and 6 more) kept in clear so people can tell their
keys apart in listings without the secret being recoverable.

Why an unsalted, fast hash and not bcrypt/scrypt/argon2: those exist to slow
down guessing of *low-entropy* secrets (passwords) after a database leak. A
256-bit random key cannot be guessed at any hash speed, so the slowness would
buy nothing, while the gateway pays the hash on every request. A salt exists
to defeat precomputed tables, which are equally useless against 2**256
inputs; without one, the hash itself is the lookup key of an index, so
authenticating a request is one hash and one indexed read.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-lp-"
VISIBLE_PREFIX_CHARS = 12


def generate_key() -> tuple[str, str, str]:
    """A new key: ``(secret, visible prefix, hash)``; show the secret once, store the rest."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    return secret, secret[:VISIBLE_PREFIX_CHARS], hash_key(secret)


def hash_key(secret: str | bytes) -> str:
    """SHA-256 hex of a key as sent by a client.

    Any input is hashed the same way, well-formed or not, with no early exit
    on the prefix or the length: the work (and so the timing) of rejecting a
    bad key says nothing about how close it came. Header values are bounded
    by the HTTP server, so the hash covers a few blocks at most.
    """
    data = secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else secret
    return hashlib.sha256(data).hexdigest()


def looks_like_jwt(token: bytes) -> bool:
    """Whether a bearer token is shaped like a compact JWS (``eyJ…`` with two dots).

    A cheap routing test, not a validation: the base64url of any JSON object
    header starts with ``eyJ`` (``{"``), and an ``sk-lp-`` key has no dots.
    """
    return token.startswith(b"eyJ") and token.count(b".") == 2

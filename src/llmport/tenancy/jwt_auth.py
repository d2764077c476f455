"""JWTs as an alternative to API keys: verified locally, with keys from a secret or a JWKS.

An organisation that already has an identity provider can let its services
call the gateway with the tokens they already hold. ``JWTVerifier.verify`` is
synchronous and cheap because nothing in it waits: the keys are loaded by
``start`` (a JWKS file, and/or a JWKS URL fetched with aiohttp and refreshed
every ``jwks_refresh_s`` by a background task), and a verified token's
identity is cached by the token's SHA-256 until the token expires, in a
bounded LRU, so a client reusing its token pays one dict lookup.

What is enforced, and why:

* **The algorithm comes from the config, never from the token alone.** The
  header's ``alg`` must be in ``algorithms`` ("none" cannot be configured).
  An HS* token is verified only with the configured ``secret`` and an RS/ES/
  PS/EdDSA token only with a JWKS key of the matching type and curve, so a
  token "signed" with a public key as an HMAC secret is refused (the classic
  algorithm-confusion attack). JWKS ``oct`` keys are ignored for the same
  reason, as are keys with ``use`` other than ``sig``.
* **Keys are picked by ``kid``.** A JWKS holding one key may omit it. A token
  naming an unknown ``kid`` fails, and when a ``jwks_url`` is configured it
  also wakes the refresh task (at most once per ``min_refresh_interval_s``),
  so a key the provider just rotated in is picked up without a flood of
  fetches from forged ``kid`` values. A refresh that changes the key set
  empties the token cache, so removing a key revokes its tokens at once.
* **Claims:** the signature, ``exp``, ``nbf``, ``iat`` (an integer, not in the
  future), ``aud`` and ``iss`` when configured, all with ``leeway_s``; the
  claims in ``require`` must be present; ``sub`` must be a non-empty string,
  since it names the caller in logs and limits. Key length minimums are
  enforced (RFC 7518: HMAC secrets at least the hash size; RSA 2048 bits).
* **Errors are safe to show:** ``str(JWTError)`` says what was wrong with the
  token ("token expired", "token audience not accepted", …) and never echoes
  the token, the keys or the expected values.

Claims are read by name from the top level of the payload (names may contain
dots or slashes, as namespaced claims such as ``https://example.com/org`` do).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import structlog

from llmport.tenancy.jwt_config import (
    EC_CURVES,
    HMAC_MIN_BYTES,
    KEY_TYPES,
    JWTConfig,
    JWTError,
    JWTIdentity,
)

log = structlog.get_logger("llmport.jwt")

_FETCH_TIMEOUT_S = 10.0
_NO_EXP_CACHE_S = 60.0  # tokens without exp (only when "exp" is not required) are re-checked often

@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None  # the JWK's own "alg", when it names one
    key: Any  # a cryptography public key


@dataclass(frozen=True, slots=True)
class _KeySet:
    keys: tuple[_Key, ...] = ()
    fingerprint: bytes = b""


class JWTVerifier:
    """Verifies tokens against one ``JWTConfig``; ``start`` it before use, ``aclose`` after.

    ``verify`` is meant for the event loop's thread, where it never blocks;
    the refresh it may request is handed to the loop ``start`` ran on.
    ``clock`` is the wall clock of the identity cache; PyJWT checks the
    claims themselves against the real time.
    """

    def __init__(self, config: JWTConfig, *, clock: Callable[[], float] = time.time,
                 cache_size: int = 4096, min_refresh_interval_s: float = 10.0) -> None:
        self.config = config
        self._secret = None if config.secret is None else config.secret.get_secret_value().encode()
        self._algorithms = frozenset(config.algorithms)
        self._audience: str | list[str] | None = config.audience
        self._jwt = jwt.PyJWT({"require": list(config.require),
                               "enforce_minimum_key_length": True})
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[JWTIdentity, float]] = OrderedDict()
        self._cache_size = cache_size
        self._min_refresh_interval_s = min_refresh_interval_s
        self._file_keys = _KeySet()
        self._url_keys = _KeySet()
        self._keys: tuple[_Key, ...] = ()
        self._keys_by_kid: dict[str, _Key] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()
        self._last_fetch = float("-inf")

    async def start(self) -> None:
        """Load ``jwks_file`` (a bad file raises ``ValueError``) and fetch ``jwks_url``.

        A failed first fetch is logged, not raised: an identity provider that
        is down must not keep the gateway (and its API-key traffic) from
        starting; the refresh task keeps trying, and JWTs fail meanwhile.
        """
        self._loop = asyncio.get_running_loop()
        if self.config.jwks_file is not None:
            self._file_keys = await asyncio.to_thread(_load_jwks_file, self.config.jwks_file)
            self._merge_keys()
        if self.config.jwks_url is not None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=_FETCH_TIMEOUT_S))
            await self.refresh()
            self._task = asyncio.create_task(self._refresh_loop(), name="llmport-jwks-refresh")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def refresh(self) -> bool:
        """Fetch ``jwks_url`` now; whether the key set changed. Failures are logged."""
        if self._session is None or self.config.jwks_url is None:
            return False
        self._last_fetch = time.monotonic()
        try:
            async with self._session.get(self.config.jwks_url,
                                         headers={"accept": "application/json"}) as response:
                if response.status != 200:
                    raise ValueError(f"HTTP {response.status}")
                body = await response.read()
            keys = _parse_jwks(orjson.loads(body))
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.warning("jwks_fetch_failed", url=self.config.jwks_url, error=str(error))
            return False
        if not keys.keys:
            # A set emptied by a faulty response would lock every client out; keep the last one.
            log.warning("jwks_fetch_failed", url=self.config.jwks_url,
                        error="no usable signing keys")
            return False
        if keys.fingerprint == self._url_keys.fingerprint:
            return False
        self._url_keys = keys
        self._merge_keys()
        log.info("jwks_loaded", url=self.config.jwks_url, keys=len(keys.keys))
        return True

    def verify(self, token: str) -> JWTIdentity:
        """The identity a valid token carries; raises ``JWTError`` otherwise."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        hit = self._cache.get(digest)
        if hit is not None:
            identity, valid_until = hit
            if now < valid_until:
                self._cache.move_to_end(digest)
                return identity
            self._cache.pop(digest, None)
            if identity.expires_at is not None:
                raise JWTError("token expired")
        identity = self._verify_uncached(token)
        if identity.expires_at is None:
            valid_until = now + _NO_EXP_CACHE_S
        else:
            valid_until = identity.expires_at + self.config.leeway_s
        self._cache[digest] = (identity, valid_until)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return identity

    def _verify_uncached(self, token: str) -> JWTIdentity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise JWTError("malformed token") from error
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise JWTError("token algorithm not allowed")
        key: Any
        if alg in HMAC_MIN_BYTES:
            if self._secret is None:
                raise JWTError("token algorithm not allowed")
            key = self._secret
        else:
            key = self._public_key(alg, header.get("kid"))
        try:
            payload = self._jwt.decode(token, key, algorithms=[alg], audience=self._audience,
                                       issuer=self.config.issuer, leeway=self.config.leeway_s)
        except jwt.PyJWTError as error:
            raise JWTError(_reason(error)) from error
        return self._identity(payload)

    def _public_key(self, alg: str, kid: str | None) -> Any:
        found = self._keys_by_kid.get(kid) if kid is not None else None
        if found is None and len(self._keys) == 1 and (kid is None or self._keys[0].kid is None):
            found = self._keys[0]
        if found is None:
            self._request_refresh()
            raise JWTError("token signing key not found")
        if (found.kty != KEY_TYPES[alg] or (alg in EC_CURVES and found.crv != EC_CURVES[alg])
                or (found.alg is not None and found.alg != alg)):
            raise JWTError("token algorithm does not match its signing key")
        return found.key

    def _identity(self, payload: dict[str, Any]) -> JWTIdentity:
        claims = self.config.claims
        subject = payload.get("sub")
        if not isinstance(subject, str) or not subject:
            raise JWTError("token lacks the required claim 'sub'")
        exp = payload.get("exp")
        return JWTIdentity(
            subject=subject,
            org_id=_text_claim(payload, claims.org_id),
            team_id=_text_claim(payload, claims.team_id),
            user_id=_text_claim(payload, claims.user_id),
            scopes=_scopes_claim(payload, claims.scopes),
            models=None if claims.models is None else _models_claim(payload, claims.models),
            # PyJWT has checked that int(exp) works
            expires_at=None if exp is None else float(int(exp)),
        )

    def _request_refresh(self) -> None:
        if self._task is None or self._loop is None:
            return
        now = time.monotonic()
        if now - self._last_fetch < self._min_refresh_interval_s:
            return
        self._last_fetch = now  # claimed here, so a burst of unknown kids wakes the task once
        self._loop.call_soon_threadsafe(self._wakeup.set)

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.jwks_refresh_s):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self.refresh()
            except Exception:  # the task must outlive any surprise; the next round retries
                log.exception("jwks_refresh_crashed", url=self.config.jwks_url)

    def _merge_keys(self) -> None:
        keys = self._file_keys.keys + self._url_keys.keys
        by_kid: dict[str, _Key] = {}
        for key in keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, key)
        self._keys, self._keys_by_kid = keys, by_kid
        self._cache.clear()


def _reason(error: jwt.PyJWTError) -> str:
    # Subclasses before their bases: InvalidSignatureError is a DecodeError.
    if isinstance(error, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(error, jwt.InvalidIssuedAtError):
        return "token issued-at time is invalid"
    if isinstance(error, jwt.InvalidAudienceError):
        return "token audience not accepted"
    if isinstance(error, jwt.InvalidIssuerError):
        return "token issuer not accepted"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token lacks the required claim '{error.claim}'"
    if isinstance(error, jwt.InvalidSignatureError):
        return "token signature invalid"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "token algorithm not allowed"
    if isinstance(error, jwt.InvalidKeyError):
        return "token signing key unusable"
    if isinstance(error, jwt.DecodeError):
        return "malformed token"
    return "invalid token"


def _text_claim(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise JWTError(f"token claim '{name}' must be a string")


def _scopes_claim(payload: dict[str, Any], name: str) -> frozenset[str]:
    value = payload.get(name)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise JWTError(f"token claim '{name}' must be a string or a list of strings")


def _models_claim(payload: dict[str, Any], name: str) -> frozenset[str] | None:
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise JWTError(f"token claim '{name}' must be a list of strings")


def _load_jwks_file(path: str) -> _KeySet:
    try:
        data = orjson.loads(Path(path).read_bytes())
        keys = _parse_jwks(data)
    except (OSError, ValueError) as error:
        raise ValueError(f"jwks_file {path}: {error}") from error
    if not keys.keys:
        raise ValueError(f"jwks_file {path}: no usable signing keys")
    return keys


def _parse_jwks(data: Any) -> _KeySet:
    """The usable signature keys of a JWKS document; unusable entries are skipped and logged."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('not a JWKS: expected {"keys": [...]}')
    keys: list[_Key] = []
    usable: list[dict[str, Any]] = []
    for jwk in data["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kty, kid, crv, alg = jwk.get("kty"), jwk.get("kid"), jwk.get("crv"), jwk.get("alg")
        if kty not in ("RSA", "EC", "OKP") or (kid is not None and not isinstance(kid, str)):
            continue
        try:
            key = jwt.PyJWK(jwk).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as error:
            log.warning("jwks_key_skipped", kid=kid, kty=kty, error=str(error))
            continue
        if hasattr(key, "public_key"):  # a private JWK: keep only what verifying needs
            key = key.public_key()
        keys.append(_Key(kid=kid, kty=kty, crv=crv if isinstance(crv, str) else None,
                         alg=alg if isinstance(alg, str) else None, key=key))
        usable.append(jwk)
    return _KeySet(tuple(keys), orjson.dumps(usable, option=orjson.OPT_SORT_KEYS))

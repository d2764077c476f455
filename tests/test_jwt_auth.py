"""JWT verification: HS secrets, JWKS files and a JWKS URL served by a real aiohttp server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning
from pydantic import SecretStr, ValidationError

from llmport.tenancy.jwt_auth import JWTVerifier
from llmport.tenancy.jwt_config import ClaimMap, JWTConfig, JWTError, JWTIdentity

SECRET = "a-shared-secret-of-at-least-32-bytes!"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "svc-1", "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(secret: str = SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, algorithm=algorithm)


def hs_verifier(**settings: Any) -> JWTVerifier:
    clock = settings.pop("clock", time.time)
    cache_size = settings.pop("cache_size", 4096)
    settings["secret"] = SecretStr(settings.get("secret", SECRET))
    return JWTVerifier(JWTConfig(**settings), clock=clock, cache_size=cache_size)


def refused(verifier: JWTVerifier, token: str) -> str:
    with pytest.raises(JWTError) as caught:
        verifier.verify(token)
    return str(caught.value)


# --- configuration -----------------------------------------------------------------------------

def test_config_needs_a_key_source() -> None:
    with pytest.raises(ValidationError, match="at least one of secret, jwks_file, jwks_url"):
        JWTConfig()


@pytest.mark.parametrize("algorithms", [["none"], ["HS256", "none"], ["NONE"], ["XS256"], []])
def test_config_refuses_none_and_unknown_algorithms(algorithms: list[str]) -> None:
    with pytest.raises(ValidationError):
        JWTConfig(secret=SecretStr(SECRET), algorithms=algorithms)


def test_config_checks_secret_length_per_algorithm_and_strictness() -> None:
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        JWTConfig(secret=SecretStr("short"))
    with pytest.raises(ValidationError, match="at least 64 bytes"):
        JWTConfig(secret=SecretStr(SECRET), algorithms=["HS256", "HS512"])
    with pytest.raises(ValidationError, match="no HS256"):
        JWTConfig(secret=SecretStr(SECRET), jwks_file="x.json", algorithms=["RS256"])
    with pytest.raises(ValidationError, match="only HS"):
        JWTConfig(jwks_file="x.json", algorithms=["HS256"])
    with pytest.raises(ValidationError, match="http"):
        JWTConfig(jwks_url="file:///etc/jwks.json")
    with pytest.raises(ValidationError, match="extra"):
        JWTConfig(secret=SecretStr(SECRET), secrett="typo")  # type: ignore[call-arg]
    config = JWTConfig(secret=SecretStr(SECRET))
    assert SECRET not in repr(config)
    with pytest.raises(ValidationError):
        config.issuer = "changed"


# --- HS256 -------------------------------------------------------------------------------------

def test_valid_hs256_token_and_default_claim_mapping() -> None:
    token = hs_token(org_id="org-1", team_id="team-7", scope="chat embeddings")
    identity = hs_verifier().verify(token)
    assert identity == JWTIdentity(
        subject="svc-1", org_id="org-1", team_id="team-7", user_id="svc-1",
        scopes=frozenset({"chat", "embeddings"}), models=None,
        expires_at=float(jwt.decode(token, options={"verify_signature": False})["exp"]))


def test_expired_token() -> None:
    now = int(time.time())
    assert refused(hs_verifier(), hs_token(exp=now - 10)) == "token expired"


def test_leeway_accepts_a_token_just_expired() -> None:
    now = int(time.time())
    assert hs_verifier(leeway_s=60).verify(hs_token(exp=now - 10)).subject == "svc-1"
    assert refused(hs_verifier(leeway_s=5), hs_token(exp=now - 10)) == "token expired"


def test_not_before_in_the_future() -> None:
    now = int(time.time())
    assert refused(hs_verifier(), hs_token(nbf=now + 120)) == "token not yet valid"
    assert hs_verifier(leeway_s=300).verify(hs_token(nbf=now + 120)).subject == "svc-1"


def test_issued_in_the_future_or_not_a_number() -> None:
    now = int(time.time())
    assert refused(hs_verifier(), hs_token(iat=now + 3600)) == "token not yet valid"
    assert refused(hs_verifier(), hs_token(iat="yesterday")) == "token issued-at time is invalid"


def test_wrong_secret() -> None:
    token = hs_token(secret="another-secret-that-is-32-bytes-long!")
    assert refused(hs_verifier(), token) == "token signature invalid"


def test_audience() -> None:
    verifier = hs_verifier(audience=["llmport", "gateway"])
    assert verifier.verify(hs_token(aud="gateway")).subject == "svc-1"
    assert verifier.verify(hs_token(aud=["other", "llmport"])).subject == "svc-1"
    assert refused(verifier, hs_token(aud="someone-else")) == "token audience not accepted"
    assert refused(verifier, hs_token()) == "token lacks the required claim 'aud'"
    # a token meant for a specific audience is not taken by a gateway that expects none
    assert refused(hs_verifier(), hs_token(aud="llmport")) == "token audience not accepted"


def test_issuer() -> None:
    verifier = hs_verifier(issuer="https://idp.example.com")
    assert verifier.verify(hs_token(iss="https://idp.example.com")).subject == "svc-1"
    assert refused(verifier, hs_token(iss="https://evil.example.com")) == (
        "token issuer not accepted")
    assert refused(verifier, hs_token()) == "token lacks the required claim 'iss'"


def test_required_claims() -> None:
    assert refused(hs_verifier(), hs_token(exp=None)) == "token lacks the required claim 'exp'"
    assert refused(hs_verifier(require=["exp", "jti"]), hs_token()) == (
        "token lacks the required claim 'jti'")
    assert hs_verifier(require=[]).verify(hs_token(exp=None)).expires_at is None
    assert refused(hs_verifier(), hs_token(sub=None)) == "token lacks the required claim 'sub'"


def test_alg_none_is_refused() -> None:
    token = jwt.encode(claims(), "", algorithm="none")
    assert refused(hs_verifier(), token) == "token algorithm not allowed"
    assert refused(hs_verifier(), token.rstrip(".") + ".c2ln") == "token algorithm not allowed"


def test_alg_outside_the_configured_list_is_refused() -> None:
    token = hs_token(secret=SECRET * 2, algorithm="HS512")
    assert refused(hs_verifier(), token) == "token algorithm not allowed"
    assert hs_verifier(algorithms=["HS512"], secret=SECRET * 2).verify(token).subject == "svc-1"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIi.@@@"])
def test_malformed_tokens(token: str) -> None:
    assert refused(hs_verifier(), token) == "malformed token"


# --- claim mapping -----------------------------------------------------------------------------

def test_claim_mapping_with_scopes_as_a_list_and_allowed_models() -> None:
    verifier = hs_verifier(claims=ClaimMap(
        org_id="https://example.com/org", team_id="grp", user_id="email",
        scopes="permissions", models="allowed_models"))
    mapped: dict[str, Any] = {
        "https://example.com/org": "org-9", "grp": 42, "email": "ann@example.com",
        "permissions": ["chat", "chat", "admin"], "allowed_models": ["gpt-4o", "claude"]}
    identity = verifier.verify(hs_token(**mapped))
    assert identity.subject == "svc-1"
    assert (identity.org_id, identity.team_id, identity.user_id) == (
        "org-9", "42", "ann@example.com")
    assert identity.scopes == frozenset({"chat", "admin"})
    assert identity.models == frozenset({"gpt-4o", "claude"})


def test_absent_optional_claims() -> None:
    verifier = hs_verifier(claims=ClaimMap(models="allowed_models"))
    identity = verifier.verify(hs_token())
    assert (identity.org_id, identity.team_id) == (None, None)
    assert identity.scopes == frozenset() and identity.models is None


@pytest.mark.parametrize(("claim", "value", "message"), [
    ("org_id", {"nested": 1}, "token claim 'org_id' must be a string"),
    ("team_id", True, "token claim 'team_id' must be a string"),
    ("scope", ["chat", 3], "token claim 'scope' must be a string or a list of strings"),
    ("scope", 7, "token claim 'scope' must be a string or a list of strings"),
    ("allowed_models", "gpt-4o", "token claim 'allowed_models' must be a list of strings"),
])
def test_badly_typed_claims(claim: str, value: Any, message: str) -> None:
    verifier = hs_verifier(claims=ClaimMap(models="allowed_models"))
    assert refused(verifier, hs_token(**{claim: value})) == message


# --- the identity cache ------------------------------------------------------------------------

def test_a_cached_identity_still_expires() -> None:
    clock = Clock()
    verifier = hs_verifier(clock=clock)
    token = hs_token(exp=int(clock.now) + 100)
    assert verifier.verify(token).subject == "svc-1"
    clock.now += 99
    assert verifier.verify(token).subject == "svc-1"
    clock.now += 2
    assert refused(verifier, token) == "token expired"


def test_the_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    clock = Clock()
    verifier = hs_verifier(clock=clock, cache_size=2)
    first, second, third = (hs_token(jti=str(i), exp=int(clock.now) + 100) for i in range(3))
    for token in (first, second, first, third):  # second is now the least recently used
        verifier.verify(token)
    clock.now += 200  # past exp by the cache's clock, still valid by the real one
    assert refused(verifier, first) == "token expired"  # cached
    assert refused(verifier, third) == "token expired"  # cached
    assert verifier.verify(second).subject == "svc-1"  # evicted, so verified afresh


def test_refused_tokens_are_not_cached() -> None:
    verifier = hs_verifier()
    token = hs_token(secret="another-secret-that-is-32-bytes-long!")
    for _ in range(2):
        assert refused(verifier, token) == "token signature invalid"


# --- JWKS files: RS256 and ES256 -----------------------------------------------------------------

@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_key_2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, **({"kid": kid} if kid else {}), **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str | None, **extra: Any) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, **({"kid": kid} if kid else {}), **extra}


def signed(key: Any, algorithm: str, kid: str | None, **overrides: Any) -> str:
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)


def write_jwks(path: Path, *keys: dict[str, Any]) -> str:
    path.write_text(json.dumps({"keys": list(keys)}))
    return str(path)


@asynccontextmanager
async def started(config: JWTConfig, **options: Any) -> AsyncIterator[JWTVerifier]:
    verifier = JWTVerifier(config, **options)
    await verifier.start()
    try:
        yield verifier
    finally:
        await verifier.aclose()


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
              ec_key: ec.EllipticCurvePrivateKey) -> str:
    return write_jwks(tmp_path / "jwks.json",
                      rsa_jwk(rsa_key, "rsa-1", alg="RS256", use="sig"),
                      ec_jwk(ec_key, "ec-1"),
                      {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},  # ignored: never for HS
                      {**rsa_jwk(rsa_key, "enc-1"), "use": "enc"})  # ignored: not for signing


async def test_rs256_and_es256_from_a_jwks_file(jwks_file: str, rsa_key: rsa.RSAPrivateKey,
                                                ec_key: ec.EllipticCurvePrivateKey) -> None:
    async with started(JWTConfig(jwks_file=jwks_file)) as verifier:
        assert verifier.verify(signed(rsa_key, "RS256", "rsa-1", org_id="o")).org_id == "o"
        assert verifier.verify(signed(ec_key, "ES256", "ec-1", sub="ec-user")).subject == "ec-user"


async def test_jwks_key_selection_failures(jwks_file: str, rsa_key: rsa.RSAPrivateKey,
                                           rsa_key_2: rsa.RSAPrivateKey,
                                           ec_key: ec.EllipticCurvePrivateKey) -> None:
    async with started(JWTConfig(jwks_file=jwks_file)) as verifier:
        assert refused(verifier, signed(rsa_key, "RS256", "rsa-9")) == (
            "token signing key not found")
        assert refused(verifier, signed(rsa_key, "RS256", None)) == "token signing key not found"
        assert refused(verifier, signed(rsa_key_2, "RS256", "rsa-1")) == (
            "token signature invalid")
        # the EC key's kid on an RSA signature, and the wrong RSA variant for a key bound to RS256
        assert refused(verifier, signed(rsa_key, "RS256", "ec-1")) == (
            "token algorithm does not match its signing key")
        # symmetric and encryption keys in the set are never used
        assert refused(verifier, signed(rsa_key, "RS256", "enc-1")) == (
            "token signing key not found")
    async with started(JWTConfig(jwks_file=jwks_file, algorithms=["PS256"])) as ps_verifier:
        assert refused(ps_verifier, signed(rsa_key, "PS256", "rsa-1")) == (
            "token algorithm does not match its signing key")


def hmac_token(key: bytes, kid: str) -> str:
    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = (b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode()) + b"."
                     + b64(json.dumps(claims()).encode()))
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + b64(signature)).decode()


async def test_an_hs_token_is_never_verified_with_a_public_key(
        jwks_file: str, rsa_key: rsa.RSAPrivateKey) -> None:
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = hmac_token(pem, "rsa-1")
    async with started(JWTConfig(jwks_file=jwks_file)) as verifier:  # HS256 allowed, no secret
        assert refused(verifier, forged) == "token algorithm not allowed"
    async with started(JWTConfig(jwks_file=jwks_file, secret=SecretStr(SECRET))) as verifier:
        assert refused(verifier, forged) == "token signature invalid"
        assert verifier.verify(hs_token()).subject == "svc-1"


async def test_a_jwks_with_one_key_may_omit_kid(tmp_path: Path,
                                                ec_key: ec.EllipticCurvePrivateKey) -> None:
    path = write_jwks(tmp_path / "one.json", ec_jwk(ec_key, None))
    async with started(JWTConfig(jwks_file=path)) as verifier:
        assert verifier.verify(signed(ec_key, "ES256", None)).subject == "svc-1"
        assert verifier.verify(signed(ec_key, "ES256", "any-kid")).subject == "svc-1"
    # ES384 needs a P-384 key; this one is P-256
    _, payload, signature = signed(ec_key, "ES256", None).split(".")
    header = base64.urlsafe_b64encode(b'{"alg":"ES384","typ":"JWT"}').rstrip(b"=").decode()
    async with started(JWTConfig(jwks_file=path, algorithms=["ES384", "ES256"])) as es384:
        assert refused(es384, ".".join([header, payload, signature])) == (
            "token algorithm does not match its signing key")


async def test_several_keys_need_a_kid(tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
                                       rsa_key_2: rsa.RSAPrivateKey) -> None:
    path = write_jwks(tmp_path / "two.json", rsa_jwk(rsa_key, None), rsa_jwk(rsa_key_2, None))
    async with started(JWTConfig(jwks_file=path)) as verifier:
        assert refused(verifier, signed(rsa_key, "RS256", None)) == "token signing key not found"


async def test_weak_rsa_keys_are_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = write_jwks(tmp_path / "weak.json", rsa_jwk(weak, "weak"))
    async with started(JWTConfig(jwks_file=path)) as verifier:
        with pytest.warns(InsecureKeyLengthWarning):  # PyJWT signs with it, reluctantly
            token = signed(weak, "RS256", "weak")
        assert refused(verifier, token) == "token signing key unusable"


@pytest.mark.parametrize("content", ["not json", '{"keys": "x"}', '[]',
                                     '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
                                     '{"keys": [{"kty": "RSA", "n": "bad"}]}'])
async def test_a_bad_jwks_file_fails_start(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    verifier = JWTVerifier(JWTConfig(jwks_file=str(path)))
    with pytest.raises(ValueError, match="jwks_file"):
        await verifier.start()


async def test_a_missing_jwks_file_fails_start(tmp_path: Path) -> None:
    verifier = JWTVerifier(JWTConfig(jwks_file=str(tmp_path / "absent.json")))
    with pytest.raises(ValueError, match=r"absent\.json"):
        await verifier.start()


# --- JWKS URL: a real server, refreshes and rotation ---------------------------------------------

class JWKSServer:
    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.status = 200
        self.hits = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        return web.json_response({"keys": self.keys})


@pytest.fixture
async def jwks_server() -> AsyncIterator[JWKSServer]:
    server = JWKSServer()
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.url = f"http://{host}:{port}/.well-known/jwks.json"
    yield server
    await runner.cleanup()


async def eventually(check: Callable[[], Awaitable[bool] | bool], steps: int = 200) -> None:
    """Wait (in small steps, bounded) for the background refresh to have an effect."""
    for _ in range(steps):
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


def accepts(verifier: JWTVerifier, token: str) -> bool:
    try:
        verifier.verify(token)
    except JWTError:
        return False
    return True


async def test_unknown_kid_triggers_a_refresh_that_finds_a_rotated_key(
        jwks_server: JWKSServer, rsa_key: rsa.RSAPrivateKey,
        rsa_key_2: rsa.RSAPrivateKey) -> None:
    jwks_server.keys = [rsa_jwk(rsa_key, "k1")]
    config = JWTConfig(jwks_url=jwks_server.url)
    async with started(config, min_refresh_interval_s=0) as verifier:
        assert jwks_server.hits == 1
        assert verifier.verify(signed(rsa_key, "RS256", "k1")).subject == "svc-1"
        new_token = signed(rsa_key_2, "RS256", "k2")
        jwks_server.keys = [rsa_jwk(rsa_key, "k1"), rsa_jwk(rsa_key_2, "k2")]
        assert refused(verifier, new_token) == "token signing key not found"
        await eventually(lambda: accepts(verifier, new_token))
        assert jwks_server.hits == 2
        assert verifier.verify(signed(rsa_key, "RS256", "k1")).subject == "svc-1"


async def test_refreshes_on_unknown_kids_are_rate_limited(
        jwks_server: JWKSServer, rsa_key: rsa.RSAPrivateKey,
        rsa_key_2: rsa.RSAPrivateKey) -> None:
    jwks_server.keys = [rsa_jwk(rsa_key, "k1")]
    async with started(JWTConfig(jwks_url=jwks_server.url),
                       min_refresh_interval_s=3600) as verifier:
        jwks_server.keys = [rsa_jwk(rsa_key, "k1"), rsa_jwk(rsa_key_2, "k2")]
        for kid in ("k2", "k3", "k4"):
            assert refused(verifier, signed(rsa_key_2, "RS256", kid)) == (
                "token signing key not found")
        for _ in range(10):
            await asyncio.sleep(0.01)
        assert jwks_server.hits == 1
        assert await verifier.refresh() is True  # an explicit refresh is not rate-limited
        assert verifier.verify(signed(rsa_key_2, "RS256", "k2")).subject == "svc-1"


async def test_periodic_refresh_revokes_removed_keys_even_for_cached_tokens(
        jwks_server: JWKSServer, ec_key: ec.EllipticCurvePrivateKey,
        rsa_key: rsa.RSAPrivateKey) -> None:
    jwks_server.keys = [ec_jwk(ec_key, "old"), rsa_jwk(rsa_key, "new")]
    async with started(JWTConfig(jwks_url=jwks_server.url, jwks_refresh_s=0.02),
                       min_refresh_interval_s=3600) as verifier:
        old_token = signed(ec_key, "ES256", "old")
        assert verifier.verify(old_token).subject == "svc-1"  # now cached
        jwks_server.keys = [rsa_jwk(rsa_key, "new")]
        await eventually(lambda: not accepts(verifier, old_token))
        assert refused(verifier, old_token) == "token signing key not found"
        assert verifier.verify(signed(rsa_key, "RS256", "new")).subject == "svc-1"


async def test_an_unchanged_key_set_keeps_the_cache(
        jwks_server: JWKSServer, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks_server.keys = [rsa_jwk(rsa_key, "k1")]
    clock = Clock()
    async with started(JWTConfig(jwks_url=jwks_server.url), clock=clock) as verifier:
        token = signed(rsa_key, "RS256", "k1", exp=int(clock.now) + 100)
        verifier.verify(token)
        assert await verifier.refresh() is False
        clock.now += 200
        assert refused(verifier, token) == "token expired"  # still the cached identity


async def test_an_unreachable_idp_does_not_stop_start_and_is_retried(
        jwks_server: JWKSServer, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks_server.status = 503
    jwks_server.keys = [rsa_jwk(rsa_key, "k1")]
    async with started(JWTConfig(jwks_url=jwks_server.url), min_refresh_interval_s=0) as verifier:
        token = signed(rsa_key, "RS256", "k1")
        assert refused(verifier, token) == "token signing key not found"
        jwks_server.status = 200
        await eventually(lambda: accepts(verifier, token))


async def test_a_bad_response_keeps_the_last_good_keys(
        jwks_server: JWKSServer, rsa_key: rsa.RSAPrivateKey) -> None:
    jwks_server.keys = [rsa_jwk(rsa_key, "k1")]
    async with started(JWTConfig(jwks_url=jwks_server.url)) as verifier:
        jwks_server.keys = []
        assert await verifier.refresh() is False
        jwks_server.status = 500
        assert await verifier.refresh() is False
        assert verifier.verify(signed(rsa_key, "RS256", "k1")).subject == "svc-1"


async def test_jwks_file_and_url_together(jwks_server: JWKSServer, tmp_path: Path,
                                          rsa_key: rsa.RSAPrivateKey,
                                          ec_key: ec.EllipticCurvePrivateKey) -> None:
    jwks_server.keys = [rsa_jwk(rsa_key, "from-url")]
    path = write_jwks(tmp_path / "local.json", ec_jwk(ec_key, "from-file"))
    async with started(JWTConfig(jwks_url=jwks_server.url, jwks_file=path)) as verifier:
        assert verifier.verify(signed(rsa_key, "RS256", "from-url")).subject == "svc-1"
        assert verifier.verify(signed(ec_key, "ES256", "from-file")).subject == "svc-1"


def test_a_gateway_without_jwt_does_not_load_pyjwt() -> None:
    # PyJWT and cryptography cost each worker about 11 MB; only a JWT config loads them.
    probe = ("import sys\n"
             "from llmport.app import create_app\n"
             "from llmport.config import Config\n"
             "create_app(Config.model_validate({'auth': {'master_key': 'sk-test-master'}}))\n"
             "print(sorted(m for m in ('jwt', 'cryptography') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stderr

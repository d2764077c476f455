"""What a JWT may be and what it carries: the ``auth.jwt`` settings, the identity a
verified token yields, and the error a refused one raises.

Apart from the verifier (``jwt_auth``) so that reading the configuration does not load
PyJWT and ``cryptography`` (about 11 MB per worker) when no JWTs are configured.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

# Shortest HMAC secret per algorithm, in bytes: the hash size (RFC 7518 section 3.2).
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
KEY_TYPES = {
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
    "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "ES256": "EC", "ES384": "EC", "ES512": "EC",
    "EdDSA": "OKP",
}
EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
SUPPORTED_ALGORITHMS = frozenset(HMAC_MIN_BYTES) | frozenset(KEY_TYPES)



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClaimMap(_Strict):
    """Which payload claim holds what."""

    org_id: str = "org_id"
    team_id: str = "team_id"
    user_id: str = "sub"
    scopes: str = Field(default="scope", description="a space-separated string or a list")
    models: str | None = Field(default=None, description="a list of allowed model names")


class JWTConfig(_Strict):
    secret: SecretStr | None = Field(default=None, description="shared secret for HS256/384/512")
    jwks_file: str | None = Field(default=None, description="a JWKS JSON file (RS/ES/PS/EdDSA)")
    jwks_url: str | None = Field(default=None, description="a JWKS URL, fetched and refreshed")
    jwks_refresh_s: float = Field(default=300, gt=0, description="seconds between JWKS fetches")
    algorithms: list[str] = Field(default_factory=lambda: ["HS256", "RS256", "ES256"],
                                  min_length=1)
    audience: str | list[str] | None = None
    issuer: str | None = None
    leeway_s: float = Field(default=0, ge=0, description="clock tolerance for exp/nbf/iat")
    require: list[str] = Field(default_factory=lambda: ["exp"],
                               description="claims that must be present")
    claims: ClaimMap = ClaimMap()

    @model_validator(mode="after")
    def _check(self) -> JWTConfig:
        if self.secret is None and self.jwks_file is None and self.jwks_url is None:
            raise ValueError("set at least one of secret, jwks_file, jwks_url")
        unknown = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
        if unknown:
            raise ValueError(f"unsupported algorithm(s) {unknown}; "
                             f"choose from {sorted(SUPPORTED_ALGORITHMS)}")
        hmac_algorithms = [a for a in self.algorithms if a in HMAC_MIN_BYTES]
        if self.secret is not None:
            if not hmac_algorithms:
                raise ValueError("secret is set but algorithms lists no HS256/HS384/HS512")
            need = max(HMAC_MIN_BYTES[a] for a in hmac_algorithms)
            if len(self.secret.get_secret_value().encode()) < need:
                raise ValueError(f"secret must be at least {need} bytes for {hmac_algorithms}")
        if ((self.jwks_file is not None or self.jwks_url is not None)
                and len(hmac_algorithms) == len(self.algorithms)):
            raise ValueError("a JWKS is set but algorithms lists only HS algorithms")
        if self.jwks_url is not None and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        if isinstance(self.audience, list) and not self.audience:
            raise ValueError("audience must not be an empty list")
        return self


@dataclass(frozen=True, slots=True)
class JWTIdentity:
    subject: str
    org_id: str | None
    team_id: str | None
    user_id: str | None
    scopes: frozenset[str]
    models: frozenset[str] | None  # None: the token does not restrict models
    expires_at: float | None


class JWTError(Exception):
    """A token was refused; ``str()`` is a short reason that is safe to show the client."""

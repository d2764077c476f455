"""API keys (generation, hashing, the JWT shape test) and HMAC request signing."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from llmport.tenancy.keys import KEY_PREFIX, generate_key, hash_key, looks_like_jwt
from llmport.tenancy.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    generate_signing_secret,
    sign,
    verify,
)

SECRET = "lpsig_test-secret"
NOW = 1_767_225_600.0
BODY = b'{"model":"gpt-4o","messages":[]}'


def test_generated_key_shape_prefix_and_hash() -> None:
    secret, prefix, digest = generate_key()
    assert secret.startswith(KEY_PREFIX) and KEY_PREFIX == "sk-lp-"
    assert re.fullmatch(r"sk-lp-[A-Za-z0-9_-]{43}", secret)
    assert prefix == secret[:12]
    assert digest == hashlib.sha256(secret.encode()).hexdigest() == hash_key(secret)


def test_generated_keys_are_distinct() -> None:
    keys = {generate_key()[0] for _ in range(50)}
    assert len(keys) == 50


def test_hash_key_accepts_bytes_and_anything_a_client_sends() -> None:
    assert hash_key(b"sk-lp-abc") == hash_key("sk-lp-abc")
    assert hash_key("sk-lp-abc") != hash_key("sk-lp-abd")
    # malformed input is hashed like any other, never rejected early
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key("\udcff not a key"))
    assert re.fullmatch(r"[0-9a-f]{64}", hash_key(b""))


@pytest.mark.parametrize(("token", "expected"), [
    (b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", True),
    (b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.", True),
    (b"sk-lp-" + b"a" * 43, False),
    (b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0", False),          # one dot
    (b"eyJhbGciOiJIUzI1NiJ9.eyJ.zdWIi.c2ln", False),           # three dots
    (b"abcJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", False),    # not a JSON header
])
def test_looks_like_jwt(token: bytes, expected: bool) -> None:
    assert looks_like_jwt(token) is expected


def test_signing_secret_shape() -> None:
    first, second = generate_signing_secret(), generate_signing_secret()
    assert re.fullmatch(r"lpsig_[A-Za-z0-9_-]{43}", first) and first != second


def test_sign_matches_the_documented_scheme() -> None:
    expected = hmac.new(SECRET.encode(), b"1767225600\nPOST\n/v1/chat/completions\n" + BODY,
                        hashlib.sha256).hexdigest()
    assert sign(SECRET, "post", "/v1/chat/completions", BODY, 1767225600) == "v1=" + expected
    assert SIGNATURE_HEADER == b"x-llmport-signature"
    assert TIMESTAMP_HEADER == b"x-llmport-timestamp"


def signed(timestamp: int = int(NOW), *, body: bytes = BODY) -> tuple[bytes, bytes]:
    return str(timestamp).encode(), sign(SECRET, "POST", "/v1/chat/completions", body,
                                         timestamp).encode()


def check(timestamp: bytes | None, signature: bytes | None, *, body: bytes = BODY,
          secret: str = SECRET, method: str = "POST", path: str = "/v1/chat/completions",
          now: float = NOW) -> str:
    return verify(secret, method, path, body, timestamp, signature, now=now, max_skew_s=300)


def test_verify_accepts_a_good_signature_and_returns_a_stable_replay_token() -> None:
    ts, sig = signed()
    token = check(ts, sig)
    assert token == sig.decode().removeprefix("v1=")
    assert check(ts, sig) == token  # a replay yields the same token for the caller to spot
    assert check(ts, sig.upper().replace(b"V1=", b"v1=")) == token  # hex case is normalised
    other_ts, other_sig = signed(int(NOW) + 1)
    assert check(other_ts, other_sig, now=NOW + 1) != token


def test_verify_allows_skew_up_to_the_limit_either_way() -> None:
    for ts_value in (int(NOW) - 300, int(NOW) + 300):
        ts, sig = signed(ts_value)
        check(ts, sig)


def reason(timestamp: bytes | None, signature: bytes | None, **kwargs: object) -> str:
    with pytest.raises(SignatureError) as caught:
        check(timestamp, signature, **kwargs)  # type: ignore[arg-type]
    assert str(caught.value)  # a message fit to show the client
    return caught.value.reason


def test_missing_headers() -> None:
    ts, sig = signed()
    assert reason(None, sig) == "missing"
    assert reason(ts, None) == "missing"


@pytest.mark.parametrize("timestamp", [b"", b"abc", b"-1767225600", b"+1767225600",
                                       b"1767225600.5", b"1_767_225_600", b"1" * 13,
                                       "١٢٣".encode()])
def test_malformed_timestamps(timestamp: bytes) -> None:
    assert reason(timestamp, signed()[1]) == "malformed"


@pytest.mark.parametrize("signature", [b"", b"deadbeef", b"v2=" + b"0" * 64, b"v1=" + b"0" * 63,
                                       b"v1=" + b"g" * 64, b"v1=" + b"0" * 65])
def test_malformed_signatures(signature: bytes) -> None:
    assert reason(signed()[0], signature) == "malformed"


def test_skew_outside_the_window() -> None:
    for ts_value in (int(NOW) - 301, int(NOW) + 301):
        ts, sig = signed(ts_value)
        assert reason(ts, sig) == "skew"


def test_any_change_to_the_signed_request_is_a_mismatch() -> None:
    ts, sig = signed()
    assert reason(ts, sig, body=BODY + b" ") == "mismatch"
    assert reason(ts, sig, method="PUT") == "mismatch"
    assert reason(ts, sig, path="/v1/embeddings") == "mismatch"
    assert reason(ts, sig, secret=SECRET + "x") == "mismatch"
    later = str(int(NOW) + 1).encode()
    assert reason(later, sig) == "mismatch"  # the timestamp is signed too

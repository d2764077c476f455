"""JWTs instead of API keys, and HMAC-signed requests, against a running llmport."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import openai
import orjson
import pytest

from llmport.tenancy.signing import sign
from tests.support.admin import Admin, chat, tenancy_config
from tests.support.servers import GatewayServer

Start = Callable[[dict[str, Any]], GatewayServer]
SECRET = "a-test-hs256-secret-of-at-least-32-bytes!"
BODY = {"model": "demo", "messages": [{"role": "user", "content": "Signed hello"}]}


def token(**claims: Any) -> str:
    return jwt.encode({"sub": "alice", "exp": time.time() + 60, **claims}, SECRET,
                      algorithm="HS256")


@pytest.fixture
def server(start_gateway: Start) -> GatewayServer:
    return start_gateway(tenancy_config(auth={
        "master_key": "sk-test-master-key-0123456789",
        "jwt": {"secret": SECRET, "audience": "llmport", "issuer": "https://idp.test",
                "claims": {"org_id": "org", "models": "models"}}}))


def test_a_valid_jwt_is_accepted_and_an_expired_one_refused(server: GatewayServer) -> None:
    good = token(aud="llmport", iss="https://idp.test")
    assert chat(server.url, good).parse().choices[0].message.content
    expired = token(aud="llmport", iss="https://idp.test", exp=time.time() - 5)
    with pytest.raises(openai.AuthenticationError, match="expired"):
        chat(server.url, expired)
    with pytest.raises(openai.AuthenticationError):
        chat(server.url, token(aud="someone-else", iss="https://idp.test"))
    with pytest.raises(openai.AuthenticationError):
        chat(server.url, token(aud="llmport", iss="https://evil.test"))
    forged = jwt.encode({"sub": "alice", "exp": time.time() + 60, "aud": "llmport",
                         "iss": "https://idp.test"}, "another-secret-of-32-bytes-or-more!!",
                        algorithm="HS256")
    with pytest.raises(openai.AuthenticationError):
        chat(server.url, forged)


def test_jwt_claims_map_to_the_tenant_and_its_limits(server: GatewayServer) -> None:
    admin = Admin(server.url)
    org = admin.call("POST", "/admin/orgs", 201, json={"name": "acme", "rpm_limit": 2})
    bearer = token(aud="llmport", iss="https://idp.test", org=org["id"], models=["demo"])
    chat(server.url, bearer)
    with pytest.raises(openai.PermissionDeniedError):
        chat(server.url, bearer, model="other")
    chat(server.url, bearer)
    with pytest.raises(openai.RateLimitError, match="organization"):
        chat(server.url, bearer)
    assert admin.usage(org_id=org["id"])["requests"] == 4


def post_signed(server: GatewayServer, key: str, secret: str | None, *,
                timestamp: int | None = None, body: bytes | None = None) -> httpx.Response:
    raw = body if body is not None else orjson.dumps(BODY)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    if secret is not None:
        stamp = int(time.time()) if timestamp is None else timestamp
        headers["x-llmport-timestamp"] = str(stamp)
        headers["x-llmport-signature"] = sign(secret, "POST", "/v1/chat/completions",
                                              orjson.dumps(BODY), stamp)
    return httpx.post(server.url + "/v1/chat/completions", content=raw, headers=headers)


def test_a_signing_key_needs_a_fresh_correct_signature_once(server: GatewayServer) -> None:
    created = Admin(server.url).key(require_signature=True)
    key, secret = created["key"], created["signing_secret"]
    assert created["require_signature"] is True

    unsigned = post_signed(server, key, None)
    assert unsigned.status_code == 401
    assert unsigned.json()["error"]["code"] == "invalid_signature"
    stamp = int(time.time())
    assert post_signed(server, key, secret, timestamp=stamp).status_code == 200
    replay = post_signed(server, key, secret, timestamp=stamp)
    assert replay.status_code == 401 and "replay" in replay.json()["error"]["message"]
    stale = post_signed(server, key, secret, timestamp=int(time.time()) - 3600)
    assert stale.status_code == 401
    tampered = post_signed(server, key, secret, body=orjson.dumps({**BODY, "n": 2}))
    assert tampered.status_code == 401
    assert post_signed(server, key, "lpsig_wrong").status_code == 401


def test_one_subject_in_two_organisations_has_two_sets_of_files(server: GatewayServer) -> None:
    admin = Admin(server.url)
    acme = admin.call("POST", "/admin/orgs", 201, json={"name": "acme"})
    globex = admin.call("POST", "/admin/orgs", 201, json={"name": "globex"})

    def files(org_id: str) -> openai.OpenAI:
        bearer = token(aud="llmport", iss="https://idp.test", org=org_id)
        return openai.OpenAI(base_url=server.url + "/v1", api_key=bearer, max_retries=0)

    at_acme, at_globex = files(acme["id"]), files(globex["id"])
    stored = at_acme.files.create(file=("plan.txt", b"acme's plan"), purpose="user_data")
    assert [f.id for f in at_acme.files.list()] == [stored.id]
    assert at_globex.files.list().data == []  # alice at globex is not alice at acme
    with pytest.raises(openai.NotFoundError):
        at_globex.files.content(stored.id)
    assert files(acme["id"]).files.content(stored.id).content == b"acme's plan"  # a new token

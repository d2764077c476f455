"""Tenants and keys end to end: the admin API, key lifecycle, allow-lists, limits and budgets.

A real llmport (SQLite, in-process store) and the official openai client.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.admin import MASTER_KEY, PRICE, Admin, chat, tenancy_config
from tests.support.databases import database_config, postgres_query
from tests.support.servers import GatewayServer

Start = Callable[[dict[str, Any]], GatewayServer]


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, start_gateway: Start) -> Iterator[GatewayServer]:
    """The same tests on the embedded SQLite file and on a fresh PostgreSQL database."""
    with database_config(request.param) as database:
        server = start_gateway(tenancy_config(**database))
        yield server
        server.stop()  # before a PostgreSQL database is dropped


def stored_rows(server: GatewayServer, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    location = server.config.database_location
    if location.startswith("postgresql"):
        numbered = sql
        for n in range(1, len(args) + 1):
            numbered = numbered.replace("?", f"${n}", 1)
        return [tuple(r) for r in postgres_query(location, numbered, *args)]
    with sqlite3.connect(location.split("///", 1)[1]) as db:
        return db.execute(sql, args).fetchall()


@pytest.fixture
def admin(server: GatewayServer) -> Admin:
    return Admin(server.url)


def cost_of(usage: Any) -> float:
    return (usage.prompt_tokens * PRICE["input"] + usage.completion_tokens * PRICE["output"]) / 1e6


def test_admin_api_needs_the_master_key_or_an_admin_scoped_key(server: GatewayServer,
                                                               admin: Admin) -> None:
    anonymous = httpx.get(server.url + "/admin/keys")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.get(server.url + "/admin/keys", headers={"authorization": "Bearer sk-nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "invalid_request_error"
    plain = admin.key(name="plain")["key"]
    refused = httpx.get(server.url + "/admin/keys", headers={"authorization": f"Bearer {plain}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "not_admin"
    operator = admin.key(name="operator", scopes=["admin"])["key"]
    assert Admin(server.url, operator).call("GET", "/admin/keys")["object"] == "list"


def test_a_new_key_is_shown_once_stored_as_a_hash_and_works(server: GatewayServer,
                                                            admin: Admin) -> None:
    created = admin.key(name="ci", metadata={"owner": "ci"})
    secret = created["key"]
    assert secret.startswith("sk-lp-") and len(secret) >= 40
    assert secret.startswith(created["prefix"])
    fetched = admin.call("GET", f"/admin/keys/{created['id']}")
    assert "key" not in fetched and fetched["metadata"] == {"owner": "ci"}
    assert all("key" not in row for row in admin.call("GET", "/admin/keys")["data"])

    (stored,), = stored_rows(server, "SELECT key_hash FROM api_keys WHERE id = ?",
                             created["id"])
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    everything = stored_rows(server, "SELECT * FROM api_keys")
    assert secret not in repr(everything)

    response = chat(server.url, secret).parse()
    assert response.choices[0].message.content


def test_revoked_expired_and_rotated_keys(server: GatewayServer, admin: Admin) -> None:
    key = admin.key(name="soon revoked")
    chat(server.url, key["key"])  # cached as valid now
    admin.call("DELETE", f"/admin/keys/{key['id']}")
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        chat(server.url, key["key"])

    expired = admin.key(expires_at="2020-01-01T00:00:00Z")
    with pytest.raises(openai.AuthenticationError, match="expired"):
        chat(server.url, expired["key"])

    old = admin.key(name="rotating", rpm_limit=50)
    chat(server.url, old["key"])
    new = admin.call("POST", f"/admin/keys/{old['id']}/rotate", 201)
    assert new["rotated_from"] == old["id"] and new["rpm_limit"] == 50
    assert new["key"] != old["key"]
    chat(server.url, new["key"])
    with pytest.raises(openai.AuthenticationError):
        chat(server.url, old["key"])


def test_a_key_restricted_to_one_model_gets_403_on_another(server: GatewayServer,
                                                          admin: Admin) -> None:
    key = admin.key(models=["demo"])["key"]
    chat(server.url, key, model="demo")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        chat(server.url, key, model="other")
    assert refused.value.status_code == 403
    assert refused.value.code == "model_not_allowed"
    listed = openai.OpenAI(base_url=server.url + "/v1", api_key=key).models.list()
    assert [m.id for m in listed.data] == ["demo"]

    org = admin.call("POST", "/admin/orgs", 201, json={"name": "acme", "models": ["other"]})
    team_key = admin.key(org_id=org["id"])["key"]
    with pytest.raises(openai.PermissionDeniedError):
        chat(server.url, team_key, model="demo")
    chat(server.url, team_key, model="other")


def test_requests_per_minute_admits_exactly_the_limit_of_a_burst(server: GatewayServer,
                                                                admin: Admin) -> None:
    key = admin.key(rpm_limit=7)["key"]

    def one(_: int) -> httpx.Response:
        return httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
            "model": "demo", "messages": [{"role": "user", "content": "Hi"}]},
            headers={"authorization": f"Bearer {key}"})

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(one, range(25)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 7 and statuses.count(429) == 18
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "7"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    usage = admin.usage(key_id=admin.call("GET", "/admin/keys")["data"][0]["id"])
    assert usage["requests"] == 25 and usage["errors"] == 18


def test_success_carries_openai_rate_limit_headers(server: GatewayServer, admin: Admin) -> None:
    key = admin.key(rpm_limit=10, tpm_limit=10_000)["key"]
    headers = chat(server.url, key).headers
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert headers["x-ratelimit-limit-tokens"] == "10000"
    assert int(headers["x-ratelimit-remaining-tokens"]) < 10_000
    assert headers["x-ratelimit-reset-requests"].endswith("s")


def test_tokens_per_minute_counts_the_real_usage(server: GatewayServer, admin: Admin) -> None:
    first = chat(server.url, admin.key()["key"]).parse()  # how many tokens one answer costs
    per_request = first.usage.total_tokens
    key = admin.key(tpm_limit=per_request * 3 + 1)["key"]
    for _ in range(3):  # sequential: each admission sees the corrected usage of the last
        chat(server.url, key)
    with pytest.raises(openai.RateLimitError) as refused:
        chat(server.url, key)
    assert "tokens per minute" in refused.value.message
    assert refused.value.response.headers["x-ratelimit-limit-tokens"] == str(per_request * 3 + 1)


def test_a_request_larger_than_the_token_limit_is_refused(server: GatewayServer,
                                                         admin: Admin) -> None:
    key = admin.key(tpm_limit=5)["key"]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError, match="Request too large"):
        client.chat.completions.create(model="demo", messages=[
            {"role": "user", "content": "word " * 200}])


def test_concurrent_requests_are_capped_and_released(start_gateway: Start) -> None:
    config = tenancy_config()
    config["models"][0].update(token_delay_ms=40)
    server = start_gateway(config)
    admin = Admin(server.url)
    key = admin.key(max_parallel_requests=2)["key"]

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)

    def one(_: int) -> str:  # a paced stream: each holds its slot for a while
        try:
            stream = client.chat.completions.create(model="demo", stream=True, messages=[
                {"role": "user", "content": "Hello"}])
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            return "ok"
        except openai.RateLimitError as exc:
            return str(exc.code)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(one, range(6)))
    assert outcomes.count("ok") >= 2
    assert outcomes.count("concurrency_limit_exceeded") >= 2
    for _ in range(3):  # every slot came back: sequential requests never collide
        chat(server.url, key)


def test_org_limits_hold_across_its_keys(server: GatewayServer, admin: Admin) -> None:
    org = admin.call("POST", "/admin/orgs", 201, json={"name": "acme", "rpm_limit": 3})
    team = admin.call("POST", "/admin/teams", 201, json={"name": "search", "org_id": org["id"]})
    first = admin.key(team_id=team["id"])
    assert first["org_id"] == org["id"]  # a team's key belongs to its org
    second = admin.key(org_id=org["id"])
    chat(server.url, first["key"])
    chat(server.url, second["key"])
    chat(server.url, first["key"])
    with pytest.raises(openai.RateLimitError, match="organization"):
        chat(server.url, second["key"])
    outsider = admin.key()["key"]
    chat(server.url, outsider)


def test_per_model_limits_of_a_key(server: GatewayServer, admin: Admin) -> None:
    key = admin.key(model_limits={"other": {"rpm_limit": 1}})["key"]
    chat(server.url, key, model="other")
    with pytest.raises(openai.RateLimitError, match="model `other`"):
        chat(server.url, key, model="other")
    for _ in range(3):
        chat(server.url, key, model="demo")


def test_a_budget_stops_requests_once_spent_and_spend_matches_the_log(
        server: GatewayServer, admin: Admin) -> None:
    one = chat(server.url, admin.key()["key"]).parse()
    budget = cost_of(one.usage) * 2.5  # the third request still starts; the fourth does not
    key = admin.key(max_budget=budget, budget_period="monthly")
    for _ in range(3):
        chat(server.url, key["key"])
    with pytest.raises(openai.APIStatusError) as refused:
        chat(server.url, key["key"])
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "budget_exceeded"  # type: ignore[index]
    assert refused.value.response.headers["retry-after"]
    logs = admin.logs(key_id=key["id"])
    assert len(logs) == 4
    assert sum(r["cost"] for r in logs) == pytest.approx(admin.usage(key_id=key["id"])["cost"])
    assert admin.usage(key_id=key["id"])["cost"] == pytest.approx(3 * cost_of(one.usage))
    assert admin.call("GET", f"/admin/keys/{key['id']}")["spend"] == pytest.approx(
        3 * cost_of(one.usage))

    admin.call("POST", "/admin/budgets/reset", json={"kind": "keys", "id": key["id"]})
    chat(server.url, key["key"])  # a fresh budget period


def test_a_team_budget_covers_every_key_of_the_team(server: GatewayServer,
                                                   admin: Admin) -> None:
    team = admin.call("POST", "/admin/teams", 201, json={"name": "t", "max_budget": 1e-9})
    key = admin.key(team_id=team["id"])["key"]
    chat(server.url, key)  # nothing spent yet
    with pytest.raises(openai.APIStatusError, match="Budget exceeded for team"):
        chat(server.url, key)


def test_every_request_leaves_one_spend_record(server: GatewayServer, admin: Admin) -> None:
    key = admin.key(rpm_limit=2)
    chat(server.url, key["key"])
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key["key"], max_retries=0)
    stream = client.chat.completions.create(model="demo", stream=True, messages=[
        {"role": "user", "content": "stream please"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    with pytest.raises(openai.RateLimitError):
        chat(server.url, key["key"])
    with pytest.raises(openai.AuthenticationError):
        chat(server.url, "sk-lp-not-a-real-key")
    records = admin.logs()
    assert len(records) == 4
    mine = sorted((r for r in records if r["key_id"] == key["id"]), key=lambda r: r["created_at"])
    assert [r["status"] for r in mine] == [200, 200, 429]
    assert mine[1]["stream"] and mine[1]["completion_tokens"] > 0 and mine[1]["cost"] > 0
    assert mine[2]["cost"] == 0 and mine[2]["error_type"] == "RateLimitError"
    assert [r["status"] for r in records if r["key_id"] is None] == [401]


def test_usage_reports_group_filter_and_csv(server: GatewayServer, admin: Admin) -> None:
    org = admin.call("POST", "/admin/orgs", 201, json={"name": "acme"})
    a = admin.key(org_id=org["id"])
    b = admin.key()
    chat(server.url, a["key"], model="demo")
    chat(server.url, a["key"], model="other")
    chat(server.url, b["key"], model="demo")
    by_model = admin.usage(group_by="model")
    assert {r["model"]: r["requests"] for r in by_model["data"]} == {"demo": 2, "other": 1}
    assert by_model["requests"] == 3
    assert admin.usage(org_id=org["id"])["requests"] == 2
    assert admin.usage(key_id=b["id"], model="demo")["requests"] == 1
    assert admin.usage(start="2999-01-01T00:00:00")["requests"] == 0
    day = admin.usage(group_by="day,key_id")["data"]
    assert {r["day"] for r in day} == {time.strftime("%Y-%m-%d", time.gmtime())}
    csv_text = admin.call("GET", "/admin/usage", params={"group_by": "model", "format": "csv"})
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("model,requests,prompt_tokens,completion_tokens")
    assert len(lines) == 3
    bad = admin.http.get("/admin/usage", params={"group_by": "colour"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


def test_tenant_crud_and_validation(server: GatewayServer, admin: Admin) -> None:
    org = admin.call("POST", "/admin/orgs", 201, json={"name": "acme", "rpm_limit": 5})
    assert org["id"].startswith("org_") and org["rpm_limit"] == 5
    team = admin.call("POST", "/admin/teams", 201, json={"name": "t", "org_id": org["id"]})
    user = admin.call("POST", "/admin/users", 201, json={"email": "a@example.com",
                                                         "team_id": team["id"],
                                                         "org_id": org["id"]})
    key = admin.key(user_id=user["id"])
    assert (key["team_id"], key["org_id"]) == (team["id"], org["id"])
    patched = admin.call("PATCH", f"/admin/orgs/{org['id']}", json={"rpm_limit": 9})
    assert patched["rpm_limit"] == 9 and patched["name"] == "acme"
    assert [t["id"] for t in admin.call("GET", "/admin/teams",
                                        params={"org_id": org["id"]})["data"]] == [team["id"]]
    unknown = admin.http.post("/admin/keys", json={"team_id": "team_nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "team_id"
    invalid = admin.http.post("/admin/keys", json={"rpm_limit": -1})
    assert invalid.status_code == 400 and invalid.json()["error"]["type"] == \
        "invalid_request_error"
    extra = admin.http.post("/admin/orgs", json={"name": "x", "colour": "red"})
    assert extra.status_code == 400
    assert admin.http.get("/admin/orgs/org_missing").status_code == 404
    admin.call("DELETE", f"/admin/orgs/{org['id']}")
    with pytest.raises(openai.AuthenticationError):  # the org's keys went with it
        chat(server.url, key["key"])


def test_admin_routes_are_in_the_openapi_docs(server: GatewayServer) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    for path in ("/admin/keys", "/admin/keys/{id}", "/admin/keys/{id}/rotate", "/admin/usage",
                 "/admin/orgs", "/admin/teams", "/admin/users", "/admin/budgets/reset",
                 "/v1/chat/completions"):
        assert path in paths, path


def test_client_ip_limits(start_gateway: Start) -> None:
    server = start_gateway(tenancy_config(limits={"ip_rpm_limit": 2}))
    chat(server.url, MASTER_KEY)
    chat(server.url, MASTER_KEY)
    with pytest.raises(openai.RateLimitError, match="client IP"):
        chat(server.url, MASTER_KEY)


def forwarded(address: str) -> dict[str, Any]:
    return {"extra_headers": {"x-forwarded-for": f"{address}, 10.1.2.3"}}


def test_client_ip_limits_behind_a_trusted_proxy(start_gateway: Start) -> None:
    """Behind a load balancer every request comes from its address: the client's is the
    one the proxies it trusts put in X-Forwarded-For (the nearest untrusted one)."""
    server = start_gateway(tenancy_config(limits={"ip_rpm_limit": 2}, server={
        "forwarded_allow_ips": ["127.0.0.1", "10.0.0.0/8"]}))
    chat(server.url, MASTER_KEY, **forwarded("203.0.113.5"))
    chat(server.url, MASTER_KEY, **forwarded("203.0.113.5"))
    with pytest.raises(openai.RateLimitError, match="client IP"):
        chat(server.url, MASTER_KEY, **forwarded("203.0.113.5"))
    chat(server.url, MASTER_KEY, **forwarded("198.51.100.7"))  # another client: its own
    chat(server.url, MASTER_KEY)  # and the proxy's own address, without the header

    untrusting = start_gateway(tenancy_config(limits={"ip_rpm_limit": 2}, server={
        "forwarded_allow_ips": []}))  # the header is anyone's to send: ignored
    chat(untrusting.url, MASTER_KEY, **forwarded("203.0.113.5"))
    chat(untrusting.url, MASTER_KEY, **forwarded("198.51.100.7"))
    with pytest.raises(openai.RateLimitError, match="client IP"):
        chat(untrusting.url, MASTER_KEY, **forwarded("192.0.2.1"))

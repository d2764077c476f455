"""Two replicas, one Redis, one PostgreSQL: tenancy holds across real processes.

Two ``llmport serve`` processes (started once for the module) share a fresh
PostgreSQL database and a unique Redis prefix, each with its own data_dir and
journal. Requests alternate between them, sequentially or from a thread pool;
every test makes its own keys, so the tests do not depend on one another.
Reports are read after asking each replica for one (a report flushes that
replica's journal), so they include every request either replica answered.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmport.policies.estimate import estimate_tokens
from tests.support.admin import PRICE, Admin, tenancy_config
from tests.support.databases import REDIS_URL, fresh_postgres, redis_prefix
from tests.support.fake_openai import FakeOpenAI, Hang
from tests.support.processes import LLMPortProcess, start_together

CHEAP = {"input": 50.0, "output": 100.0}  # US$ per million tokens: about $0.003 a request
HELLO = [{"role": "user", "content": "Hello there"}]


@dataclass
class Cluster:
    replicas: tuple[LLMPortProcess, LLMPortProcess]
    admins: tuple[Admin, Admin]

    def admin(self, index: int = 0) -> Admin:
        """The admin API of replica ``index``."""
        return self.admins[index]

    def url(self, index: int) -> str:
        """The replica for the index-th request: they alternate."""
        return self.replicas[index % 2].url

    def flush(self) -> None:
        """Make every replica's answered requests visible in the database."""
        for index in range(2):
            self.admin(index).logs(limit=1)


def replica_config(directory: Path, database_url: str, prefix: str,
                   upstream: FakeOpenAI) -> dict[str, Any]:
    config = tenancy_config(
        logging={"access_log": False}, data_dir=str(directory / "data"),
        database_url=database_url, redis_url=REDIS_URL, redis_prefix=prefix)
    # Invalidations must be what ends a cached key, not its cache entry running out.
    config["auth"]["key_cache_ttl"] = 300
    config["models"] += [
        {"name": "cheap", "provider": "demo", "first_token_ms": 0, "token_delay_ms": 0,
         "pricing": CHEAP},
        # Each stream holds its concurrency slot for about a second.
        {"name": "slow", "provider": "demo", "first_token_ms": 600, "token_delay_ms": 20,
         "pricing": PRICE},
        {"name": "gpt-4o-mini", "provider": "openai", "model": "fake-model",
         "api_base": upstream.url, "api_key": "sk-upstream", "pricing": PRICE}]
    return config


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            upstream: FakeOpenAI) -> Iterator[Cluster]:
    with redis_prefix() as prefix, fresh_postgres() as database_url:
        replicas = []
        for name in ("replica-a", "replica-b"):
            directory = tmp_path_factory.mktemp(name)
            replicas.append(LLMPortProcess(replica_config(directory, database_url, prefix,
                                                          upstream), directory, name))
        # Side by side, as an orchestrator starts them: both migrate the empty database.
        a, b = start_together(*replicas)
        admins = (Admin(a.url), Admin(b.url))
        try:
            yield Cluster((a, b), admins)
        finally:
            for admin in admins:
                admin.http.close()
            for process in (a, b):
                if process.running:
                    process.stop()


def post(url: str, key: str, body: dict[str, Any], client: httpx.Client | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    sent = {"authorization": f"Bearer {key}", **(headers or {})}
    if client is not None:
        return client.post(url + "/v1/chat/completions", json=body, headers=sent)
    return httpx.post(url + "/v1/chat/completions", json=body, headers=sent, timeout=30)


def burst(cluster: Cluster, key: str, count: int, body: dict[str, Any],
          threads: int = 16) -> list[httpx.Response]:
    """``count`` requests from a thread pool, alternating between the replicas."""
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    clients = [httpx.Client(timeout=30, limits=limits) for _ in range(2)]
    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            return list(pool.map(
                lambda i: post(cluster.url(i), key, body, clients[i % 2]), range(count)))
    finally:
        for client in clients:
            client.close()


def statuses(responses: list[httpx.Response]) -> list[int]:
    return [r.status_code for r in responses]


def test_requests_per_minute_hold_exactly_across_two_replicas(cluster: Cluster) -> None:
    key = cluster.admin().key(name="rpm", rpm_limit=100)
    responses = burst(cluster, key["key"], 300, {"model": "demo", "messages": HELLO})
    assert statuses(responses).count(200) == 100
    assert statuses(responses).count(429) == 200
    for index, refused in enumerate(responses):
        if refused.status_code == 429:
            assert int(refused.headers["retry-after"]) >= 1, index
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.headers["x-ratelimit-limit-requests"] == "100"
    cluster.flush()
    for index in range(2):  # the spend log counts the refusals too, whichever replica asks
        usage = cluster.admin(index).usage(key_id=key["id"])
        assert (usage["requests"], usage["errors"]) == (300, 200)


def test_tokens_per_minute_hold_across_two_replicas(cluster: Cluster) -> None:
    admin = cluster.admin()
    # One completion token after a prompt of 3-letter words: the admission estimate (4
    # characters a token, plus the message overhead) is one token short of what the demo
    # model bills. Being short, only the settled real usage can refuse the (n+1)th request.
    body = {"model": "demo", "messages": [{"role": "user", "content": "cat " * 100}],
            "max_tokens": 1}
    probe = post(cluster.url(0), admin.key(name="probe")["key"], body)
    assert probe.status_code == 200
    per_request = probe.json()["usage"]["total_tokens"]
    estimate = estimate_tokens(body)
    assert 0.8 * per_request < estimate < per_request
    n = 4
    # Room for n requests' real usage and for one token less than the next one's estimate.
    limit = n * per_request + estimate - 1

    key = admin.key(name="tpm", tpm_limit=limit)
    for index in range(n):  # sequential: each admission sees the settled usage of the last
        answered = post(cluster.url(index), key["key"], body)
        assert answered.status_code == 200, (index, answered.text)
    for index in range(n, n + 2):  # refused on both replicas
        refused = post(cluster.url(index), key["key"], body)
        assert refused.status_code == 429, (index, refused.text)
        assert "tokens per minute" in refused.json()["error"]["message"]
        assert refused.headers["x-ratelimit-limit-tokens"] == str(limit)
        assert int(refused.headers["retry-after"]) >= 1

    fresh = admin.key(name="tpm burst", tpm_limit=limit)
    responses = burst(cluster, fresh["key"], 3 * n, body)
    accepted = statuses(responses).count(200)
    assert statuses(responses).count(429) == 3 * n - accepted
    # A request is admitted if its estimate fits beside what the window holds: the real usage
    # of the requests that settled, and the estimates of those still in flight (the real usage
    # replaces an estimate only when its request settles). In a burst, requests admitted
    # before the others settled were counted at the estimate, which is short here: at most
    # 1 + (limit - estimate) // estimate fit, one more than the n that sequential requests
    # get. At least n always fit, whatever has settled.
    most = 1 + (limit - estimate) // estimate
    assert most == n + 1
    assert n <= accepted <= n + 1


def stream_once(client: httpx.Client, url: str, key: str) -> str:
    """One streamed chat to the end: "ok", or the refusal's error code."""
    with client.stream("POST", url + "/v1/chat/completions", headers={
            "authorization": f"Bearer {key}"}, json={
            "model": "slow", "stream": True, "messages": HELLO}) as response:
        if response.status_code != 200:
            response.read()
            assert response.status_code == 429, response.text
            return str(response.json()["error"]["code"])
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and len(lines) > 3
    return "ok"


def simultaneous_streams(cluster: Cluster, key: str, count: int) -> list[str]:
    """``count`` streams over both replicas, released at once from connected clients."""
    clients = [httpx.Client(timeout=30) for _ in range(count)]
    start = threading.Barrier(count)

    def one(index: int) -> str:
        client, url = clients[index], cluster.url(index)
        assert client.get(url + "/healthz").status_code == 200  # connected before the start
        start.wait(30)
        return stream_once(client, url, key)

    try:
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            return list(pool.map(one, range(count)))
    finally:
        for client in clients:
            client.close()


def test_a_concurrency_limit_holds_across_replicas_and_releases_its_slots(
        cluster: Cluster) -> None:
    key = cluster.admin().key(name="parallel", max_parallel_requests=3)["key"]
    outcomes = simultaneous_streams(cluster, key, 12)
    assert outcomes.count("ok") == 3, outcomes
    assert outcomes.count("concurrency_limit_exceeded") == 9, outcomes

    again = simultaneous_streams(cluster, key, 4)  # all three slots came back, not fewer
    assert sorted(again) == ["concurrency_limit_exceeded", "ok", "ok", "ok"]
    for index in range(3):  # and sequential requests never collide
        answered = post(cluster.url(index), key, {"model": "slow", "messages": HELLO})
        assert answered.status_code == 200, answered.text


def test_a_budget_holds_across_replicas_and_spend_matches_the_log(cluster: Cluster) -> None:
    admin = cluster.admin()
    body = {"model": "cheap", "messages": HELLO}
    usage = post(cluster.url(0), admin.key(name="probe")["key"], body).json()["usage"]
    cost = (usage["prompt_tokens"] * CHEAP["input"]
            + usage["completion_tokens"] * CHEAP["output"]) / 1e6
    assert 0.002 < cost < 0.004
    budget = 0.01
    expected, spent = 0, 0.0  # requests start while the spend so far is below the budget
    while spent < budget:
        expected, spent = expected + 1, spent + cost

    key = admin.key(name="budget", max_budget=budget)
    responses = [post(cluster.url(i), key["key"], body) for i in range(expected + 4)]
    assert statuses(responses) == [200] * expected + [402] * 4
    for refused in responses[expected:]:  # the last four: two on each replica
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert "Budget exceeded for this API key" in refused.json()["error"]["message"]

    cluster.flush()
    for index in range(2):
        reported = cluster.admin(index).usage(key_id=key["id"])["cost"]
        logs = cluster.admin(index).logs(key_id=key["id"])
        assert len(logs) == expected + 4
        assert reported == pytest.approx(sum(r["cost"] for r in logs), abs=1e-9)
        assert reported == pytest.approx(expected * cost, abs=1e-9)
    assert admin.call("GET", f"/admin/keys/{key['id']}")["spend"] == pytest.approx(
        expected * cost, abs=1e-9)


def test_a_key_revoked_on_one_replica_is_refused_by_the_other_within_a_second(
        cluster: Cluster) -> None:
    admin = cluster.admin(0)
    key = admin.key(name="revoked soon")
    body = {"model": "demo", "messages": HELLO}
    for index in range(2):  # used, and so cached, on both
        assert post(cluster.url(index), key["key"], body).status_code == 200

    admin.call("DELETE", f"/admin/keys/{key['id']}")
    revoked_at = time.monotonic()
    with httpx.Client(timeout=5) as client:
        while True:
            refused = post(cluster.url(1), key["key"], body, client)
            elapsed = time.monotonic() - revoked_at
            if refused.status_code != 200 or elapsed > 5:
                break
            time.sleep(0.05)
    assert refused.status_code == 401, refused.text
    assert "revoked" in refused.json()["error"]["message"]
    assert elapsed < 1.0
    assert post(cluster.url(0), key["key"], body).status_code == 401


def test_a_key_restricted_to_one_model_gets_403_on_another_on_both_replicas(
        cluster: Cluster) -> None:
    key = cluster.admin().key(name="demo only", models=["demo"])["key"]
    for index in range(2):
        allowed = post(cluster.url(index), key, {"model": "demo", "messages": HELLO})
        assert allowed.status_code == 200, allowed.text
        refused = post(cluster.url(index), key, {"model": "other", "messages": HELLO})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "model_not_allowed"


def test_an_idempotent_request_repeated_on_both_replicas_runs_and_is_billed_once(
        cluster: Cluster, fake: FakeOpenAI) -> None:
    key = cluster.admin().key(name="idempotent")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Once, please"}]}
    fake.enqueue(Hang(0.5))  # the first holds on long enough for the others to arrive
    start = threading.Barrier(5)

    def one(index: int) -> httpx.Response:
        start.wait(30)
        return post(cluster.url(index), key["key"], body,
                    headers={"idempotency-key": "order-17"})

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(one, range(5)))
    assert statuses(responses) == [200] * 5, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("x-llmport-idempotent-replay") == "true" for r in responses) == 4
    assert len([h for h in fake.history if h.path.endswith("/chat/completions")]) == 1
    cluster.flush()
    logs = cluster.admin(1).logs(key_id=key["id"])
    assert len(logs) == 5
    assert [r["cost"] > 0 for r in logs].count(True) == 1
    assert cluster.admin(0).usage(key_id=key["id"])["cost"] == pytest.approx(
        max(r["cost"] for r in logs), abs=1e-12)

"""Idempotency-Key end to end: one upstream call and one charge however often a request repeats."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.support.admin import Admin, priced_upstream, tenancy_config
from tests.support.fake_openai import Fail, FakeOpenAI, Hang
from tests.support.servers import GatewayServer

Start = Callable[[dict[str, Any]], GatewayServer]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Once, please"}]}


@pytest.fixture
def server(fake: FakeOpenAI, start_gateway: Start) -> GatewayServer:
    config = tenancy_config()
    config["models"].append(priced_upstream(fake.url))
    return start_gateway(config)


def post(server: GatewayServer, key: str, body: dict[str, Any], idem: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {key}", "idempotency-key": idem})


def test_five_concurrent_repeats_reach_the_upstream_once_and_are_billed_once(
        server: GatewayServer, fake: FakeOpenAI) -> None:
    admin = Admin(server.url)
    key = admin.key()
    fake.enqueue(Hang(0.5))  # the first holds on long enough for the others to arrive

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        responses = list(pool.map(lambda _: post(server, key["key"], BODY, "order-17"),
                                  range(5)))
    assert [r.status_code for r in responses] == [200] * 5
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("x-llmport-idempotent-replay") == "true" for r in responses) == 4
    assert len([h for h in fake.history if h.path.endswith("/chat/completions")]) == 1
    logs = admin.logs(key_id=key["id"])
    assert len(logs) == 5
    assert [r["cost"] > 0 for r in logs].count(True) == 1
    assert admin.usage(key_id=key["id"])["cost"] == pytest.approx(
        max(r["cost"] for r in logs))


def test_same_key_other_body_is_a_conflict(server: GatewayServer, fake: FakeOpenAI) -> None:
    key = Admin(server.url).key()["key"]
    assert post(server, key, BODY, "k1").status_code == 200
    other = {**BODY, "messages": [{"role": "user", "content": "Something else"}]}
    conflict = post(server, key, other, "k1")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_key_reused"
    with pytest.raises(openai.ConflictError):
        openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0).chat.completions \
            .create(**other, extra_headers={"idempotency-key": "k1"})
    assert post(server, key, other, "k2").status_code == 200  # a new key runs


def test_keys_belong_to_their_caller(server: GatewayServer, fake: FakeOpenAI) -> None:
    admin = Admin(server.url)
    first, second = admin.key()["key"], admin.key()["key"]
    a = post(server, first, BODY, "shared-name")
    b = post(server, second, BODY, "shared-name")
    assert a.json()["id"] != b.json()["id"]
    assert "x-llmport-idempotent-replay" not in b.headers


def test_a_failed_first_attempt_leaves_nothing_behind(server: GatewayServer,
                                                      fake: FakeOpenAI) -> None:
    key = Admin(server.url).key()["key"]
    fake.enqueue(Fail(400, "bad request", "invalid_request_error"))
    assert post(server, key, BODY, "retry-me").status_code == 400
    retried = post(server, key, BODY, "retry-me")
    assert retried.status_code == 200 and "x-llmport-idempotent-replay" not in retried.headers


def test_a_stream_is_replayed_as_the_same_stream(server: GatewayServer, fake: FakeOpenAI) -> None:
    key = Admin(server.url).key()["key"]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)

    def run() -> list[str]:
        stream = client.chat.completions.create(**BODY, stream=True,
                                                extra_headers={"idempotency-key": "s1"})
        return [c.choices[0].delta.content or "" for c in stream if c.choices]

    first, second = run(), run()
    assert first == second and "".join(first)
    assert len([h for h in fake.history if h.path.endswith("/chat/completions")]) == 1

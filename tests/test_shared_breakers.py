"""Circuit breakers shared through Redis: what one replica learns, every replica acts on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from llmport.routing.breaker import BreakerState
from tests.support.databases import redis_prefix
from tests.support.fake_openai import Answer, Fail, FakeOpenAI
from tests.support.servers import GatewayServer

Start = Callable[[dict[str, Any]], GatewayServer]
BODY = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def prefix() -> Iterator[str]:
    with redis_prefix() as value:
        yield value


def replica(start: Start, fake: FakeOpenAI, prefix: str, open_seconds: float) -> GatewayServer:
    return start({
        "redis_url": "redis://127.0.0.1:6379/0", "redis_prefix": prefix,
        "router": {"num_retries": 0, "circuit_breaker": {
            "failure_threshold": 2, "open_seconds": open_seconds, "min_requests": 100}},
        "models": [{"name": "m", "provider": "openai", "api_base": fake.url}]})


def breaker(server: GatewayServer) -> Any:
    return server.gateway.router.deployments[0].breaker


def wait_for_state(server: GatewayServer, state: BreakerState, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while breaker(server).state is not state and time.monotonic() < deadline:
        time.sleep(0.01)
    assert breaker(server).state is state


def test_a_breaker_opened_on_one_replica_opens_on_the_others(
        fake: FakeOpenAI, start_gateway: Start, prefix: str) -> None:
    a = replica(start_gateway, fake, prefix, open_seconds=30)
    b = replica(start_gateway, fake, prefix, open_seconds=30)
    fake.default = Fail(503, "down")
    for _ in range(2):
        assert httpx.post(a.url + "/v1/chat/completions", json=BODY).status_code == 503
    wait_for_state(a, BreakerState.OPEN)
    wait_for_state(b, BreakerState.OPEN)
    calls = len(fake.history)
    refused = httpx.post(b.url + "/v1/chat/completions", json=BODY)
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert len(fake.history) == calls  # B never tried the upstream it knows to be down
    late = replica(start_gateway, fake, prefix, open_seconds=30)
    assert breaker(late).state is BreakerState.OPEN  # learned at start from the store


def test_a_successful_probe_closes_it_everywhere(fake: FakeOpenAI, start_gateway: Start,
                                                 prefix: str) -> None:
    a = replica(start_gateway, fake, prefix, open_seconds=0.5)
    b = replica(start_gateway, fake, prefix, open_seconds=0.5)
    fake.default = Fail(503, "down")
    for _ in range(2):
        httpx.post(a.url + "/v1/chat/completions", json=BODY)
    wait_for_state(b, BreakerState.OPEN)
    fake.default = Answer()
    time.sleep(0.6)  # open_seconds: A lets its probe through
    assert httpx.post(a.url + "/v1/chat/completions", json=BODY).status_code == 200
    wait_for_state(a, BreakerState.CLOSED)
    wait_for_state(b, BreakerState.CLOSED)

"""Strategies, priority tiers, hedging and admission queues, through a running gateway."""

from __future__ import annotations

import collections
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.fake_openai import Answer, Fail, FakeOpenAI

USER: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def trio() -> Iterator[list[FakeOpenAI]]:
    fakes = [FakeOpenAI().start() for _ in range(3)]
    yield fakes
    for fake in fakes:
        fake.stop()


@pytest.fixture
def fakes(trio: list[FakeOpenAI]) -> list[FakeOpenAI]:
    for fake in trio:
        fake.reset()
    return trio


def pool(fakes: list[FakeOpenAI], *entries: dict[str, Any], **router: Any) -> dict[str, Any]:
    models = [{"name": "m", "provider": "openai", "api_base": fake.url, "model": f"up{i}",
               **entry} for i, (fake, entry) in enumerate(zip(fakes, entries, strict=False))]
    return {"models": models, "router": {"backoff_base": 0.01, **router}}


def calls(fakes: list[FakeOpenAI]) -> list[int]:
    return [len(f.history) for f in fakes]


def client_for(server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def test_weighted_spreads_by_weight(fakes: list[FakeOpenAI], start_gateway: Any) -> None:
    client = client_for(start_gateway(pool(fakes, {"weight": 3}, {"weight": 1})))
    for _ in range(200):
        client.chat.completions.create(model="m", messages=USER)
    first, second, _ = calls(fakes)
    assert first + second == 200
    assert 110 <= first <= 185  # 150 expected


def test_priority_tier_two_only_when_tier_one_is_down(fakes: list[FakeOpenAI],
                                                      start_gateway: Any) -> None:
    server = start_gateway(pool(fakes, {"priority": 1}, {"priority": 2}, num_retries=0,
                                circuit_breaker={"failure_threshold": 1, "open_seconds": 60}))
    client = client_for(server)
    for _ in range(5):
        client.chat.completions.create(model="m", messages=USER)
    assert calls(fakes)[:2] == [5, 0]
    fakes[0].default = Fail(503)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=USER)  # opens tier 1's breaker
    for _ in range(5):
        client.chat.completions.create(model="m", messages=USER)
    assert calls(fakes)[:2] == [6, 5]


def test_least_busy_avoids_the_busy_deployment(fakes: list[FakeOpenAI],
                                               start_gateway: Any) -> None:
    server = start_gateway(pool(fakes, {}, {}, strategy="least-busy"))
    fakes[0].default = Answer(ttft=1.0)
    fakes[1].default = Answer(ttft=1.0)
    client = client_for(server)
    with concurrent.futures.ThreadPoolExecutor(6) as workers:
        futures = [workers.submit(client.chat.completions.create, model="m", messages=USER)
                   for _ in range(6)]
        for future in futures:
            future.result()
    assert calls(fakes)[:2] == [3, 3]  # never piled onto one while the other had fewer


def test_latency_prefers_the_faster_deployment(fakes: list[FakeOpenAI],
                                               start_gateway: Any) -> None:
    server = start_gateway(pool(fakes, {}, {}, strategy="latency"))
    fakes[0].default = Answer(ttft=0.15)
    client = client_for(server)
    for _ in range(12):
        client.chat.completions.create(model="m", messages=USER)
    slow, fast, _ = calls(fakes)
    assert slow == 1 and fast == 11  # each tried once to learn, then the fast one


def test_cost_picks_the_cheapest(fakes: list[FakeOpenAI], start_gateway: Any) -> None:
    server = start_gateway(pool(fakes, {"pricing": {"input": 5, "output": 15}},
                                {"pricing": {"input": 0.15, "output": 0.6}}, strategy="cost"))
    client = client_for(server)
    for _ in range(5):
        client.chat.completions.create(model="m", messages=USER)
    assert calls(fakes)[:2] == [0, 5]


def test_retries_move_to_another_deployment_at_once(fakes: list[FakeOpenAI],
                                                    start_gateway: Any) -> None:
    server = start_gateway(pool(fakes, {"priority": 1}, {"priority": 2}))
    fakes[0].enqueue(Fail(429, "busy", headers={"retry-after": "30"}))
    started = time.monotonic()
    assert client_for(server).chat.completions.create(model="m", messages=USER).choices
    assert time.monotonic() - started < 1.0  # no 30 s wait when another deployment is up
    assert calls(fakes)[:2] == [1, 1]


def test_hedged_request_takes_the_first_answer(fakes: list[FakeOpenAI],
                                               start_gateway: Any) -> None:
    # Tiers make the order known: the first attempt goes to tier 1, the hedge to tier 2.
    server = start_gateway(pool(fakes, {"priority": 1}, {"priority": 2},
                                models={"m": {"hedge_after": 0.2}}))
    slow, fast = fakes[0], fakes[1]
    slow.default = Answer(ttft=3.0)
    client = client_for(server)
    started = time.monotonic()
    stream = client.chat.completions.create(model="m", messages=USER, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from the fake upstream , answering every"
    assert time.monotonic() - started < 2.0
    assert calls(fakes)[:2] == [1, 1]
    assert fast.history[0].at - slow.history[0].at >= 0.19  # started after the hedge delay
    assert slow.wait_for(lambda: slow.history[0].disconnected)  # the loser was cancelled


def test_no_hedge_when_the_first_attempt_is_quick(fakes: list[FakeOpenAI],
                                                  start_gateway: Any) -> None:
    server = start_gateway(pool(fakes, {"priority": 1}, {"priority": 2},
                                models={"m": {"hedge_after": 0.5}}))
    client = client_for(server)
    for _ in range(3):
        client.chat.completions.create(model="m", messages=USER)
    assert calls(fakes)[:2] == [3, 0]


def test_queue_admits_by_priority_and_rejects_overflow(fakes: list[FakeOpenAI],
                                                       start_gateway: Any) -> None:
    server = start_gateway(pool(fakes, {"max_concurrency": 2, "queue_size": 5,
                                        "queue_timeout": 20}))
    fakes[0].default = Answer(ttft=1.0, tokens=1)
    results: dict[int, tuple[int, float, str | None]] = {}
    gate = threading.Barrier(10)
    # A known arrival order. Requests 0 and 1 take the two places 0.3 s apart, so each
    # later place frees 0.3 s after the one before (the waiting ones are admitted one at a
    # time, far apart from the jitter of a loaded machine); 7 to 9 come before any ends.
    arrival = {0: 0.0, 1: 0.3, **{i: 0.35 + 0.05 * (i - 2) for i in range(2, 10)}}

    def send(index: int) -> None:
        priority = {2: "high", 3: "low", 4: "5", 5: "low"}.get(index, "normal")
        gate.wait()
        time.sleep(arrival[index])
        response = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                              json={"model": "m",
                                    "messages": [{"role": "user", "content": f"request {index}"}]},
                              headers={"x-llmport-priority": priority})
        results[index] = (response.status_code, time.monotonic(),
                          response.headers.get("retry-after"))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = collections.Counter(code for code, _, _ in results.values())
    assert statuses == {200: 7, 429: 3}
    rejected = sorted(i for i, (code, _, _) in results.items() if code == 429)
    assert rejected == [7, 8, 9]  # the latest arrivals found the queue full
    assert all(int(results[i][2] or 0) >= 1 for i in rejected)
    # In the order the upstream received them: 0 and 1 at once, then the waiting five most
    # urgent first — high, 5, normal, then the two lows in their order of arrival.
    admitted = [int(r.body["messages"][-1]["content"].split()[-1]) for r in fakes[0].history]
    assert admitted == [0, 1, 2, 4, 6, 3, 5]
    finish = sorted((at, i) for i, (code, at, _) in results.items() if code == 200)
    assert [i for _, i in finish] == admitted  # each answered as it was admitted

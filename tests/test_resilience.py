"""Fault injection: every way an upstream misbehaves, and what the caller gets.

Two fake upstreams on loopback: `primary` serves the model `main`, `backup`
serves the model `backup`, configured as main's fallback. Timings are scaled
down (a "20 s" first token is 3 s against a 0.5 s budget) so the suite stays
fast; the mechanisms are the same. Each test asserts what the caller
received (a complete answer or a clean error, never a truncated success),
how many attempts each upstream saw, and the model and usage reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support.events import Finished, finished_events
from tests.support.fake_openai import Answer, Fail, FakeOpenAI, Hang, Reset
from tests.support.servers import GatewayServer

USER: Any = [{"role": "user", "content": "Tell me something."}]
FULL_60 = "".join((" " if i else "") + w for i, w in enumerate(
    (["Hello", "from", "the", "fake", "upstream", ",", "answering", "every", "request",
      "quickly", "and", "exactly", "."] * 5)[:60]))


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    pair = (FakeOpenAI().start(), FakeOpenAI().start())
    yield pair
    for fake in pair:
        fake.stop()


@pytest.fixture
def primary(upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> FakeOpenAI:
    upstreams[0].reset()
    return upstreams[0]


@pytest.fixture
def backup(upstreams: tuple[FakeOpenAI, FakeOpenAI]) -> FakeOpenAI:
    upstreams[1].reset()
    return upstreams[1]


def config(primary: FakeOpenAI, backup: FakeOpenAI, **router: Any) -> dict[str, Any]:
    return {
        "models": [
            {"name": "main", "provider": "openai", "model": "primary-model",
             "api_base": primary.url, "timeout": 5, "connect_timeout": 1,
             "first_token_timeout": 0.5, "stream_idle_timeout": 0.5},
            {"name": "backup", "provider": "openai", "model": "backup-model",
             "api_base": backup.url, "supports_prefill": True, "timeout": 5},
            {"name": "long", "provider": "openai", "model": "long-model",
             "api_base": backup.url, "timeout": 5},
        ],
        "router": {"num_retries": 2, "backoff_base": 0.01, "backoff_max": 0.05,
                   "fallbacks": {"main": ["backup"]}, "stream_rescue": "continue",
                   "context_window_fallbacks": {"main": ["long"]}, **router},
    }


@pytest.fixture
def gateway(primary: FakeOpenAI, backup: FakeOpenAI,
            start_gateway: Callable[[dict[str, Any]], GatewayServer]) -> GatewayServer:
    return start_gateway(config(primary, backup))


@pytest.fixture
def client(gateway: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0, timeout=20)


@pytest.fixture
def finished(gateway: GatewayServer) -> Finished:
    return finished_events(gateway.gateway)


def stream_text(client: openai.OpenAI) -> tuple[str, Any, list[Any]]:
    chunks = list(client.chat.completions.create(
        model="main", messages=USER, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert finish == ["stop"], finish  # one complete answer, finished once
    return text, chunks[-1].usage, chunks


@pytest.mark.parametrize("headers", [{"retry-after": "1"}, {"retry-after-ms": "300"}, {}])
def test_429_is_retried_after_the_upstream_asked_pause(client: openai.OpenAI,
                                                       primary: FakeOpenAI, backup: FakeOpenAI,
                                                       headers: dict[str, str]) -> None:
    primary.enqueue(Fail(429, "slow down", "rate_limit_error", headers=headers))
    answer = client.chat.completions.create(model="main", messages=USER)
    assert answer.model == "fake-model-2024" and answer.usage is not None
    assert [len(primary.history), len(backup.history)] == [2, 0]
    pause = primary.history[1].at - primary.history[0].at
    wanted = {"retry-after": 1.0, "retry-after-ms": 0.3}.get(next(iter(headers), ""), 0.0)
    assert pause >= wanted * 0.95


def test_500_once_is_retried(client: openai.OpenAI, primary: FakeOpenAI,
                             backup: FakeOpenAI) -> None:
    primary.enqueue(Fail(500))
    text, usage, _ = stream_text(client)
    assert text == "Hello from the fake upstream , answering every"
    assert usage.completion_tokens == 8
    assert [len(primary.history), len(backup.history)] == [2, 0]


def test_503_always_falls_back_after_the_retries(client: openai.OpenAI, primary: FakeOpenAI,
                                                 backup: FakeOpenAI,
                                                 finished: Finished) -> None:
    primary.default = Fail(503, "overloaded")
    backup.default = Answer(tokens=3, model="backup-upstream-id")
    answer = client.chat.completions.create(model="main", messages=USER)
    assert answer.choices[0].message.content == "Hello from the"
    assert answer.model == "backup-upstream-id"  # the model that actually answered
    assert [len(primary.history), len(backup.history)] == [3, 1]
    event = finished.wait(1)[-1]
    assert event.served_model == "backup" and event.model == "main"
    assert event.usage is not None and event.usage.completion_tokens == 3  # backup's usage


def test_reset_before_headers_is_retried(client: openai.OpenAI, primary: FakeOpenAI,
                                         backup: FakeOpenAI) -> None:
    primary.enqueue(Reset())
    text, _, _ = stream_text(client)
    assert text.startswith("Hello")
    assert [len(primary.history), len(backup.history)] == [2, 0]


@pytest.mark.parametrize("stream", [False, True])
def test_silent_upstream_is_not_waited_on_twice(primary: FakeOpenAI, backup: FakeOpenAI,
                                                start_gateway: Any, stream: bool) -> None:
    settings = config(primary, backup)
    settings["models"][0]["timeout"] = 0.5
    server = start_gateway(settings)
    primary.default = Hang()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    started = time.monotonic()
    if stream:
        text, _, _ = stream_text(client)
    else:
        answer = client.chat.completions.create(model="main", messages=USER)
        text = answer.choices[0].message.content
    assert text == "Hello from the fake upstream , answering every"
    assert time.monotonic() - started < 2.5  # one 0.5 s budget, not three
    assert [len(primary.history), len(backup.history)] == [1, 1]
    assert primary.wait_for(lambda: primary.history[0].disconnected)


def test_late_first_token_moves_on(client: openai.OpenAI, primary: FakeOpenAI,
                                   backup: FakeOpenAI) -> None:
    primary.default = Answer(ttft=3.0)
    started = time.monotonic()
    text, _, _ = stream_text(client)
    assert text.startswith("Hello") and time.monotonic() - started < 2.5
    assert [len(primary.history), len(backup.history)] == [1, 1]


@pytest.mark.parametrize("fault", [{"cut_after": 40}, {"stall_after": 20}])
def test_broken_stream_is_continued_on_the_fallback(client: openai.OpenAI, primary: FakeOpenAI,
                                                    backup: FakeOpenAI, fault: dict[str, int],
                                                    finished: Finished) -> None:
    primary.default = Answer(tokens=60, **fault)
    backup.default = Answer(tokens=60)
    backup.prefill = "continue"
    text, usage, chunks = stream_text(client)
    assert text == FULL_60
    sent = next(iter(fault.values()))
    continuation = backup.history[0].body["messages"][-1]
    assert continuation["role"] == "assistant"
    assert continuation["content"] == "".join(FULL_60.split(" ", sent)[:sent]) or \
        FULL_60.startswith(continuation["content"])
    assert len(continuation["content"].split()) == sent
    assert usage.completion_tokens == 60 - sent  # billed: the continuation, not the failure
    assert len({c.id for c in chunks}) == 1  # one stream, one id
    assert [len(primary.history), len(backup.history)] == [1, 1]
    assert finished.wait(1)[-1].served_model == "backup" and finished[-1].status == 200


def test_prefill_refused_restarts_cleanly(client: openai.OpenAI, primary: FakeOpenAI,
                                          backup: FakeOpenAI) -> None:
    primary.default = Answer(tokens=60, cut_after=40)
    backup.default = Answer(tokens=60)
    backup.prefill = "reject"
    text, usage, _ = stream_text(client)
    assert text == FULL_60  # the rest of the restarted answer, not a second copy
    assert [len(primary.history), len(backup.history)] == [1, 2]
    assert backup.history[0].body["messages"][-1]["role"] == "assistant"
    assert backup.history[1].body["messages"] == USER
    assert usage.completion_tokens == 60


def test_unrescuable_stream_ends_with_the_original_error(client: openai.OpenAI,
                                                         primary: FakeOpenAI,
                                                         backup: FakeOpenAI) -> None:
    primary.default = Answer(tokens=60, cut_after=40)
    backup.default = Fail(400, "prefill refused", "invalid_request_error")
    with pytest.raises(openai.APIError) as info:
        list(client.chat.completions.create(model="main", messages=USER, stream=True))
    assert "broke off" in info.value.message  # the original failure, not the fallback's


def test_rescue_is_opt_in(primary: FakeOpenAI, backup: FakeOpenAI, start_gateway: Any) -> None:
    server = start_gateway(config(primary, backup, stream_rescue="error"))
    primary.default = Answer(tokens=60, cut_after=40)
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "main", "messages": USER, "stream": True})
    assert response.status_code == 200
    assert "[DONE]" not in response.text and '"error"' in response.text
    assert len(backup.history) == 0


def test_malformed_chunk_is_skipped_and_counted(client: openai.OpenAI, primary: FakeOpenAI,
                                                finished: Finished) -> None:
    primary.default = Answer(tokens=8, malformed_at=4)
    text, _, _ = stream_text(client)
    assert text == "Hello from the fake upstream , answering every"
    assert finished.wait(1)[-1].skipped_chunks == 1


def test_context_length_goes_to_the_larger_model_not_retried(client: openai.OpenAI,
                                                             primary: FakeOpenAI,
                                                             backup: FakeOpenAI) -> None:
    primary.default = Fail(400, "This model's maximum context length is 8192 tokens.",
                           "invalid_request_error", "context_length_exceeded")
    answer = client.chat.completions.create(model="main", messages=USER)
    assert answer.choices[0].message.content.startswith("Hello")
    assert len(primary.history) == 1
    assert [r.body["model"] for r in backup.history] == ["long-model"]


def test_content_policy_is_returned_with_the_reason(client: openai.OpenAI, primary: FakeOpenAI,
                                                    backup: FakeOpenAI) -> None:
    primary.default = Fail(400, "Your request was rejected by the safety system: violence.",
                           "invalid_request_error", "content_policy_violation")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="main", messages=USER, stream=True)
    assert info.value.code == "content_policy_violation"
    assert "safety system: violence" in info.value.message
    assert [len(primary.history), len(backup.history)] == [1, 0]


def test_content_policy_fallback_when_configured(primary: FakeOpenAI, backup: FakeOpenAI,
                                                 start_gateway: Any) -> None:
    server = start_gateway(config(primary, backup,
                                  content_policy_fallbacks={"main": ["backup"]}))
    primary.default = Fail(400, "rejected", "invalid_request_error", "content_policy_violation")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    assert client.chat.completions.create(model="main", messages=USER).choices
    assert [len(primary.history), len(backup.history)] == [1, 1]


def test_bad_request_is_never_retried(client: openai.OpenAI, primary: FakeOpenAI,
                                      backup: FakeOpenAI) -> None:
    primary.default = Fail(400, "bad temperature", "invalid_request_error", "invalid_value")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="main", messages=USER)
    assert [len(primary.history), len(backup.history)] == [1, 0]


def test_persistent_503_opens_the_breaker(primary: FakeOpenAI, backup: FakeOpenAI,
                                          start_gateway: Any) -> None:
    server = start_gateway(config(primary, backup, num_retries=0, circuit_breaker={
        "failure_threshold": 3, "open_seconds": 60}))
    primary.default = Fail(503)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    for _ in range(10):
        assert client.chat.completions.create(model="main", messages=USER).choices
    assert [len(primary.history), len(backup.history)] == [3, 10]
    health = httpx.get(server.url + "/readyz").json()["deployments"]
    main = next(d for d in health if d["model"] == "main")
    assert main["breaker"] == "open" and "503" in main["last_error"]


def test_flapping_primary_is_probed_then_trusted_again(primary: FakeOpenAI, backup: FakeOpenAI,
                                                       start_gateway: Any) -> None:
    # Scaled: down for 3 s, a request every 0.1 s, breaker open for 0.5 s at a time.
    server = start_gateway(config(primary, backup, num_retries=0, circuit_breaker={
        "failure_threshold": 2, "open_seconds": 0.5}))
    from tests.support.fake_openai import FailUntil

    recovery = time.monotonic() + 3.0
    primary.default = FailUntil(recovery)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    served_by_primary_at: list[float] = []
    end = recovery + 2.0
    while time.monotonic() < end:
        before = len(primary.history)
        answer = client.chat.completions.create(model="main", messages=USER)
        assert answer.choices[0].message.content  # every request answered
        if len(primary.history) > before and time.monotonic() >= recovery:
            served_by_primary_at.append(time.monotonic())
        time.sleep(0.1)
    down_hits = [r.at for r in primary.history if r.at < recovery]
    # 2 failures open it, then at most one probe per 0.5 s open interval.
    assert len(down_hits) <= 2 + int(3.0 / 0.5) + 1
    assert len(down_hits) < len([r for r in backup.history if r.at < recovery])
    assert served_by_primary_at and served_by_primary_at[0] - recovery < 1.5
    late = [r for r in backup.history if r.at > recovery + 1.5]
    assert late == []  # traffic is back on the primary


def test_all_deployments_down_is_503_with_retry_after(primary: FakeOpenAI, backup: FakeOpenAI,
                                                      start_gateway: Any) -> None:
    server = start_gateway({"models": [{"name": "solo", "provider": "openai",
                                        "api_base": primary.url}],
                            "router": {"num_retries": 0, "circuit_breaker": {
                                "failure_threshold": 1, "open_seconds": 30}}})
    primary.default = Fail(500)
    body = {"model": "solo", "messages": USER}
    assert httpx.post(server.url + "/v1/chat/completions", json=body).status_code == 500
    down = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert down.status_code == 503 and int(down.headers["retry-after"]) >= 1
    assert down.json()["error"]["type"] == "service_unavailable"
    assert len(primary.history) == 1

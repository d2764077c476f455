"""Streaming correctness: disconnects cancel upstream work; failures never look complete."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import orjson
import pytest

from llmport.observability.events import RequestFinished
from tests.conftest import MASTER_KEY
from tests.support.fake_openai import Answer, Fail, FakeOpenAI
from tests.support.servers import GatewayServer

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
USER: Any = [{"role": "user", "content": "hi"}]


def test_client_disconnect_cancels_the_upstream_stream(proxied: GatewayServer,
                                                       fake: FakeOpenAI) -> None:
    fake.enqueue(Answer(tokens=500, delay=0.02))
    body = {"model": "gpt-4o-mini", "messages": USER, "stream": True}
    with httpx.stream("POST", proxied.url + "/v1/chat/completions", json=body,
                      headers=AUTH) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: ") for line in received)
    hung_up = time.monotonic()
    assert fake.wait_for(lambda: fake.history[-1].disconnected, timeout=3)
    assert not fake.history[-1].finished
    assert time.monotonic() - hung_up < 1.0


def test_client_disconnect_cancels_a_pending_non_stream_call(proxied: GatewayServer,
                                                             fake: FakeOpenAI) -> None:
    fake.enqueue(Answer(ttft=30))
    body = {"model": "gpt-4o-mini", "messages": USER}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(proxied.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=0.5)
    assert fake.wait_for(lambda: fake.history[-1].disconnected, timeout=3)


def test_disconnect_cancels_the_demo_generation(start_gateway: Any) -> None:
    server = start_gateway({"models": [{"name": "demo", "provider": "demo",
                                        "first_token_ms": 0, "token_delay_ms": 100}]})
    finished: list[RequestFinished] = []
    server.gateway.events.subscribe(
        lambda e: finished.append(e) if isinstance(e, RequestFinished) else None)
    body = {"model": "demo", "messages": USER, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 2
    while not finished and time.monotonic() < deadline:
        time.sleep(0.01)
    # A full answer takes ~3 s at this pace; the request ended as the client's doing, at once.
    assert [e.status for e in finished] == [499]
    assert finished[0].latency_s < 1.0


def test_mid_stream_failure_ends_with_an_error_event(proxied: GatewayServer,
                                                     fake: FakeOpenAI) -> None:
    fake.enqueue(Answer(tokens=60, cut_after=40))
    body = {"model": "gpt-4o-mini", "messages": USER, "stream": True}
    response = httpx.post(proxied.url + "/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200  # the headers had been sent
    events = [e[len("data: "):] for e in response.text.strip().split("\n\n")]
    assert "[DONE]" not in events
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == "upstream_connection_error"
    contents = [orjson.loads(e)["choices"][0]["delta"].get("content") for e in events[1:-1]]
    assert len([c for c in contents if c]) == 40


def test_official_client_raises_on_a_broken_stream(client: openai.OpenAI,
                                                   fake: FakeOpenAI) -> None:
    fake.enqueue(Answer(tokens=30, cut_after=10))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    received: list[Any] = []
    with pytest.raises(openai.APIError) as info:
        received.extend(stream)
    assert "broke off" in info.value.message
    assert received and all(c.choices[0].finish_reason is None for c in received if c.choices)


@pytest.mark.parametrize("hold_open", [0.0, 30.0])
def test_stream_without_done_is_finalised_promptly_with_usage(
        client: openai.OpenAI, fake: FakeOpenAI, hold_open: float) -> None:
    # Complete answers from servers that forget [DONE]: one closes, one keeps the line open.
    fake.enqueue(Answer(tokens=5, done=False, hold_open=hold_open))
    started = time.monotonic()
    chunks = list(client.chat.completions.create(
        model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}))
    assert time.monotonic() - started < 5  # not the 30 s the upstream would hold it
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert len(fake.history) == 1


def test_stream_closed_before_finishing_is_not_a_complete_answer(
        client: openai.OpenAI, fake: FakeOpenAI) -> None:
    fake.enqueue(Answer(tokens=8, cut_after=4))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    with pytest.raises(openai.APIError):
        list(stream)


def test_failure_before_the_first_byte_is_a_normal_error(client: openai.OpenAI,
                                                         fake: FakeOpenAI) -> None:
    fake.enqueue(Fail(400, "bad things", "invalid_request_error", "nope"))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    assert info.value.status_code == 400 and info.value.code == "nope"


def test_retryable_failure_before_output_is_retried_transparently(client: openai.OpenAI,
                                                                  fake: FakeOpenAI) -> None:
    fake.enqueue(Fail(503, "overloaded"), Answer(tokens=4))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from the fake"
    assert len(fake.history) == 2


def test_one_malformed_chunk_is_skipped(client: openai.OpenAI, fake: FakeOpenAI) -> None:
    fake.enqueue(Answer(tokens=6, malformed_at=3))
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from the fake upstream ,"  # all six tokens, the broken event skipped


def test_the_last_event_arrives_with_the_end_of_the_body(proxied: GatewayServer) -> None:
    """A client that stops at ``[DONE]`` must find the response complete (to reuse the
    connection), so the last event and the end of the body go in one ASGI message (one write)."""
    inner = proxied.server.config.loaded_app
    bodies: list[tuple[bytes, bool]] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def recorded(message: Any) -> None:
            if message["type"] == "http.response.body":
                bodies.append((message.get("body", b""), message.get("more_body", False)))
            await send(message)
        await inner(scope, receive, recorded)

    proxied.server.config.loaded_app = recording  # new connections are served through it
    with httpx.stream("POST", proxied.url + "/v1/chat/completions", headers=AUTH,
                      json={"model": "gpt-4o-mini", "messages": USER, "stream": True}) as answer:
        assert answer.status_code == 200
        assert answer.read().endswith(b"data: [DONE]\n\n")
    assert bodies[-1] == (b"data: [DONE]\n\n", False)
    assert all(more for _, more in bodies[:-1])

"""The ``anthropic`` provider: the official ``openai`` client, llmport, a fake Messages upstream.

The fake (tests/support/fake_anthropic.py) is strict like the real API: each
request llmport sends must have exactly the Messages API's shape and obey its
rules, or it answers 400 and the test fails. Answers come back as OpenAI
chat completions and chunks, checked against OpenAI's official schema.
"""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import MASTER_KEY, claude_config
from tests.support import spec
from tests.support.events import finished_events
from tests.support.fake_anthropic import TEXT, Fail, FakeAnthropic, Reply
from tests.support.fake_openai import Hang
from tests.support.servers import GatewayServer

USER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                                "parameters": {"type": "object", "properties": {
                                                    "city": {"type": "string"}}}}}]
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture
def upstream(claude_upstream: FakeAnthropic) -> FakeAnthropic:
    return claude_upstream


@pytest.fixture
def server(upstream: FakeAnthropic, start_gateway: Any) -> GatewayServer:
    gateway: GatewayServer = start_gateway(claude_config(upstream))
    return gateway


@pytest.fixture
def client(server: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER_KEY, max_retries=0)


def chunks_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    events = response.text[:-2].split("\n\n")
    assert events[-1] == "data: [DONE]"
    chunks = [orjson.loads(e[len("data: "):]) for e in events[:-1]]
    for chunk in chunks:
        spec.check(chunk, "CreateChatCompletionStreamResponse")
    return chunks


# -- answers -----------------------------------------------------------------------------------

def test_chat_completion_from_a_messages_upstream(client: openai.OpenAI,
                                                  upstream: FakeAnthropic) -> None:
    completion = client.chat.completions.create(model="claude", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Use metric units."}, *USER])
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.id.startswith("msg_fake") and completion.model == "claude-fake-4-5-20250929"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 25 and completion.usage.completion_tokens == 10
    sent = upstream.history[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-upstream"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["x-team"] == "search" and "authorization" not in sent.headers
    assert sent.body == {"model": "claude-sonnet-4-5", "max_tokens": 4096, "messages": [
        {"role": "user", "content": [{"type": "text", "text": USER[0]["content"]}]}],
        "system": [{"type": "text", "text": "Be brief."},
                   {"type": "text", "text": "Use metric units."}]}


def test_the_raw_completion_matches_the_openai_schema(server: GatewayServer) -> None:
    response = httpx.post(server.url + "/v1/chat/completions", headers=AUTH,
                          json={"model": "claude", "messages": USER, "max_tokens": 50})
    assert response.status_code == 200
    spec.check(response.json(), "CreateChatCompletionResponse")


@pytest.mark.parametrize("include_usage", [True, False])
def test_streams_become_chunks(server: GatewayServer, upstream: FakeAnthropic,
                               include_usage: bool) -> None:
    body: dict[str, Any] = {"model": "claude", "messages": USER, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    chunks = chunks_of(httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json=body))
    assert len({c["id"] for c in chunks}) == 1
    with_choices = [c for c in chunks if c["choices"]]
    assert with_choices[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in with_choices)
    assert text == TEXT
    assert [c["choices"][0]["finish_reason"] for c in with_choices][-1] == "stop"
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
        assert usage_chunks[0]["usage"]["prompt_tokens"] == 25
        assert usage_chunks[0]["usage"]["completion_tokens"] == 10
    else:
        assert usage_chunks == []
    assert upstream.history[-1].body["stream"] is True


def test_official_client_streams(client: openai.OpenAI, server: GatewayServer) -> None:
    finished = finished_events(server.gateway)
    stream = client.chat.completions.create(model="claude", messages=USER, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == TEXT
    usage = finished.wait(1)[-1].usage  # the gateway saw the usage though the client did not ask
    assert (usage.prompt_tokens, usage.completion_tokens) == (25, 10)


def test_tool_calls(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    completion = client.chat.completions.create(model="claude", messages=USER, tools=TOOLS,
                                                tool_choice="required",
                                                parallel_tool_calls=False)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call: Any = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.id == "toolu_01FakeA09q90qw90lq917835" and call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    sent = upstream.history[-1].body
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent["tools"] == [{"name": "get_weather", "description": "Weather",
                              "input_schema": TOOLS[0]["function"]["parameters"]}]


def test_streamed_tool_call_arguments(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="claude", messages=USER, tools=TOOLS, stream=True,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    chunks = [c for c in stream if c.choices]
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id == "toolu_01FakeA09q90qw90lq917835" and calls[0].index == 0
    assert calls[0].function and calls[0].function.name == "get_weather"
    pieces = [c.function.arguments for c in calls[1:] if c.function]
    assert len(pieces) > 1 and "".join(p or "" for p in pieces) == '{"city":"Paris"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_a_tool_round_trip(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    completion = client.chat.completions.create(model="claude", tools=TOOLS, messages=[
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_9", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_9", "content": "18 C and sunny"}])
    assert completion.choices[0].message.content == "The tool said: 18 C and sunny"
    assert upstream.history[-1].body["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9",
                                           "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9",
                                      "content": "18 C and sunny"}]}]


def test_images_base64_and_url(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "Compare."},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}}]}])
    assert upstream.history[-1].body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.jpg"}}]


def test_stop_sequences_and_max_tokens(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    stopped = client.chat.completions.create(model="claude", messages=USER, stop=["upstream,"])
    assert stopped.choices[0].message.content == "Hello from the fake Anthropic "
    assert stopped.choices[0].finish_reason == "stop"
    assert upstream.history[-1].body["stop_sequences"] == ["upstream,"]
    short = client.chat.completions.create(model="claude", messages=USER, max_tokens=3,
                                           temperature=1.7)
    assert short.choices[0].message.content == "Hello from the"
    assert short.choices[0].finish_reason == "length"
    assert upstream.history[-1].body["max_tokens"] == 3
    assert upstream.history[-1].body["temperature"] == 1.0


def test_cache_usage_counts_into_prompt_tokens(client: openai.OpenAI,
                                               upstream: FakeAnthropic) -> None:
    upstream.enqueue(Reply(text="ok", usage={"input_tokens": 10, "cache_creation_input_tokens": 20,
                                             "cache_read_input_tokens": 30}))
    usage: Any = client.chat.completions.create(model="claude", messages=USER).usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (60, 1, 61)
    assert usage.prompt_tokens_details.cached_tokens == 30


def test_prefill_is_continued(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    completion = client.chat.completions.create(model="claude", messages=[
        *USER, {"role": "assistant", "content": "It is "}])
    assert completion.choices[0].message.content == " (continued by the fake)"
    assert upstream.history[-1].body["messages"][-1] == {
        "role": "assistant", "content": [{"type": "text", "text": "It is"}]}


def test_thinking_becomes_reasoning_content(server: GatewayServer,
                                            upstream: FakeAnthropic) -> None:
    upstream.enqueue(Reply(text="42", thinking="Six times seven."),
                     Reply(text="42", thinking="Six times seven."))
    body = {"model": "claude", "messages": USER}
    message = httpx.post(server.url + "/v1/chat/completions", headers=AUTH,
                         json=body).json()["choices"][0]["message"]
    assert message["content"] == "42" and message["reasoning_content"] == "Six times seven."
    chunks = chunks_of(httpx.post(server.url + "/v1/chat/completions", headers=AUTH,
                                  json={**body, "stream": True}))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "Six times seven."


def test_upstream_thinking_reaches_a_client_that_asks(server: GatewayServer,
                                                     upstream: FakeAnthropic) -> None:
    upstream.enqueue(*[Reply(text="42", thinking="Six times seven.")] * 2)
    claude = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    request: Any = {"model": "claude", "max_tokens": 100, "messages": USER,
                    "thinking": {"type": "adaptive"}}
    message = claude.messages.create(**request)
    assert [(b.type, getattr(b, "thinking", None)) for b in message.content] == [
        ("thinking", "Six times seven."), ("text", None)]
    with claude.messages.stream(**request) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[1].type == "text"
    assert final.content[0].thinking == "Six times seven."


def test_the_anthropic_client_through_llmport_to_a_messages_upstream(
        server: GatewayServer, upstream: FakeAnthropic) -> None:
    claude = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    tools: Any = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    message = claude.messages.create(model="claude", max_tokens=100, messages=USER,
                                     tools=tools, tool_choice={"type": "any"})
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    with claude.messages.stream(model="claude", max_tokens=100, messages=USER) as stream:
        assert "".join(stream.text_stream) == TEXT
        final = stream.get_final_message()
    assert final.usage.input_tokens == 25 and final.usage.output_tokens == 10
    assert upstream.history[-1].body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": USER[0]["content"]}]}]
    stopped = claude.messages.create(model="claude", max_tokens=100, messages=USER,
                                     stop_sequences=["upstream,"])
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "upstream,")
    assert stopped.content[0].text == "Hello from the fake Anthropic "  # type: ignore[union-attr]


def test_default_max_tokens_and_api_base_with_v1(upstream: FakeAnthropic,
                                                 start_gateway: Any) -> None:
    server = start_gateway(claude_config(upstream, default_max_tokens=77,
                                         api_base=upstream.url + "/v1/"))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    client.chat.completions.create(model="claude", messages=USER)
    assert upstream.history[-1].path == "/v1/messages"
    assert upstream.history[-1].body["max_tokens"] == 77


# -- errors ------------------------------------------------------------------------------------

def test_overloaded_is_529_and_retried(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    upstream.enqueue(Fail(), Fail(), Fail())
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="claude", messages=USER)
    assert info.value.status_code == 529
    assert info.value.body == {"message": "Overloaded", "type": "overloaded_error",
                               "param": None, "code": "upstream_error"}
    assert len(upstream.history) == 3  # the first try and two retries
    upstream.enqueue(Fail())
    assert client.chat.completions.create(model="claude", messages=USER).choices[0].message


def test_overloaded_reaches_a_messages_client_as_529(server: GatewayServer,
                                                     upstream: FakeAnthropic) -> None:
    upstream.enqueue(Fail(), Fail(), Fail())
    claude = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(anthropic.OverloadedError) as info:
        claude.messages.create(model="claude", max_tokens=5, messages=USER)
    assert info.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                          "message": "Overloaded"}}


def test_rate_limits_keep_their_retry_hint(upstream: FakeAnthropic, start_gateway: Any) -> None:
    # No retries here: the router would honour the hint by waiting 7 s before retrying.
    server = start_gateway({**claude_config(upstream), "router": {"num_retries": 0}})
    upstream.enqueue(Fail(429, "rate_limit_error", "Number of requests has exceeded your "
                          "rate limit", headers={"retry-after": "7"}))
    response = httpx.post(server.url + "/v1/chat/completions", headers=AUTH,
                          json={"model": "claude", "messages": USER})
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["type"] == "rate_limit_error"
    upstream.enqueue(Fail(429, "rate_limit_error", "slow down"))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="claude", messages=USER)


def test_prompt_too_long_is_context_length_exceeded(client: openai.OpenAI,
                                                    upstream: FakeAnthropic) -> None:
    upstream.enqueue(Fail(400, "invalid_request_error",
                          "prompt is too long: 208310 tokens > 200000 maximum"))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=USER)
    assert info.value.code == "context_length_exceeded"
    assert len(upstream.history) == 1


@pytest.mark.parametrize(("status", "kind", "exception"), [
    (400, "invalid_request_error", openai.BadRequestError),
    (401, "authentication_error", openai.AuthenticationError),
    (403, "permission_error", openai.PermissionDeniedError),
    (404, "not_found_error", openai.NotFoundError),
])
def test_client_errors_are_not_retried(client: openai.OpenAI, upstream: FakeAnthropic,
                                       status: int, kind: str,
                                       exception: type[Exception]) -> None:
    upstream.enqueue(Fail(status, kind, f"upstream says {kind}"))
    with pytest.raises(exception) as info:
        client.chat.completions.create(model="claude", messages=USER)
    error: Any = info.value
    assert error.status_code == status and error.body["message"] == f"upstream says {kind}"
    assert len(upstream.history) == 1


def test_what_messages_cannot_express_is_refused_before_the_upstream(
        client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=USER, n=2)
    assert info.value.param == "n"
    assert upstream.history == []


def test_overloaded_mid_stream(server: GatewayServer, upstream: FakeAnthropic) -> None:
    body = {"model": "claude", "messages": USER, "stream": True}
    upstream.enqueue(Reply(error_after=0), Reply())  # before any output: retried unseen
    chunks = chunks_of(httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json=body))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"]) == TEXT
    assert len(upstream.history) == 2
    upstream.enqueue(Reply(error_after=3))  # after output: the stream ends with the error
    response = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json=body)
    last = response.text[:-2].split("\n\n")[-1]
    assert "[DONE]" not in response.text
    assert orjson.loads(last[len("data: "):])["error"]["type"] == "overloaded_error"


def test_broken_streams_never_look_complete(server: GatewayServer,
                                           upstream: FakeAnthropic) -> None:
    upstream.enqueue(Reply(cut_after=3))
    response = httpx.post(server.url + "/v1/chat/completions", headers=AUTH,
                          json={"model": "claude", "messages": USER, "stream": True})
    assert "[DONE]" not in response.text
    last = response.text[:-2].split("\n\n")[-1]
    assert orjson.loads(last[len("data: "):])["error"]["code"] == "upstream_connection_error"


def test_a_complete_answer_without_message_stop_is_complete(server: GatewayServer,
                                                            upstream: FakeAnthropic) -> None:
    upstream.enqueue(Reply(stop=False))  # message_delta said why it stopped, then EOF
    chunks = chunks_of(httpx.post(server.url + "/v1/chat/completions", headers=AUTH, json={
        "model": "claude", "messages": USER, "stream": True,
        "stream_options": {"include_usage": True}}))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if c["choices"]) == TEXT
    assert chunks[-1]["usage"]["completion_tokens"] == 10


def test_timeouts_and_disconnects(upstream: FakeAnthropic, start_gateway: Any) -> None:
    server = start_gateway({**claude_config(upstream, timeout=0.3), "router": {"num_retries": 0}})
    upstream.enqueue(Hang())
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="claude", messages=USER)
    assert info.value.status_code == 504
    assert upstream.wait_for(lambda: upstream.history[-1].disconnected)


def test_client_disconnect_cancels_the_upstream_stream(server: GatewayServer,
                                                       upstream: FakeAnthropic) -> None:
    upstream.enqueue(Reply(text="word " * 400, delay=0.02))
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=AUTH, json={
            "model": "claude", "messages": USER, "stream": True}) as response:
        received = [line for _, line in zip(range(6), response.iter_lines(), strict=False)]
    assert len(received) == 6
    assert upstream.wait_for(lambda: upstream.history[-1].disconnected, timeout=3)
    assert not upstream.history[-1].finished

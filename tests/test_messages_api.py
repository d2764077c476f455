"""``POST /v1/messages`` through a real llmport, for models whatever their provider.

The official ``anthropic`` client talks to llmport serving an OpenAI-compatible
upstream (the fake) and the demo model; raw HTTP checks the exact bytes:
every body and event has exactly the Messages API's shape (checked against the
SDK's types), events come in the API's order, errors in its envelope.
"""

from __future__ import annotations

import base64
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.conftest import MASTER_KEY
from tests.support.fake_openai import Answer, Fail, FakeOpenAI
from tests.support.messages_shapes import event_problems, message_problems
from tests.support.servers import GatewayServer

HEADERS = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
USER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS: Any = [{"name": "get_weather", "description": "Weather for a city", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
FAKE_TEXT = "Hello from the fake upstream , answering every"  # the fake's 8 default tokens
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake image").decode()


@pytest.fixture
def claude(proxied: GatewayServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxied.url, api_key=MASTER_KEY, max_retries=0)


def post(server: GatewayServer, body: dict[str, Any], path: str = "/v1/messages",
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=HEADERS if headers is None
                      else headers)


def events_of(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """The events of a Messages stream, checking the framing and each event's exact shape."""
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("\n\n")
    events = []
    for raw in response.text[:-2].split("\n\n"):
        name_line, data_line = raw.split("\n")
        assert name_line.startswith("event: ") and data_line.startswith("data: "), raw
        name, data = name_line[len("event: "):], orjson.loads(data_line[len("data: "):])
        assert data["type"] == name
        if name != "error":
            assert event_problems(data) == [], data
        events.append((name, data))
    return events


def anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind
    return str(body["error"]["message"])


# -- answers -----------------------------------------------------------------------------------

def test_client_gets_a_message_from_an_openai_upstream(claude: anthropic.Anthropic,
                                                       fake: FakeOpenAI) -> None:
    message = claude.messages.create(model="gpt-4o-mini", max_tokens=100, system="Be brief.",
                                     messages=USER, extra_body={"temperature": 0.5})
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == FAKE_TEXT  # type: ignore[union-attr]
    assert message.role == "assistant" and message.type == "message"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == 11 and message.usage.output_tokens == 8
    assert message.id.startswith("msg_") and message.model == "fake-model-2024"
    sent = fake.history[-1].body
    assert sent["model"] == "fake-model" and sent["max_tokens"] == 100
    assert sent["temperature"] == 0.5
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, *USER]


def test_the_raw_message_has_exactly_the_api_shape(proxied: GatewayServer) -> None:
    response = post(proxied, {"model": "gpt-4o-mini", "max_tokens": 50, "messages": USER})
    assert response.status_code == 200
    assert response.headers["request-id"] == response.headers["x-request-id"]
    body = response.json()
    assert message_problems(body) == []
    assert list(body) == ["id", "type", "role", "model", "content", "stop_reason",
                          "stop_sequence", "usage"]
    assert body["usage"] == {"input_tokens": 11, "cache_creation_input_tokens": 0,
                             "cache_read_input_tokens": 0, "output_tokens": 8}


def test_stream_events_come_in_the_api_order(proxied: GatewayServer, fake: FakeOpenAI) -> None:
    response = post(proxied, {"model": "gpt-4o-mini", "max_tokens": 50, "messages": USER,
                              "stream": True})
    assert response.status_code == 200
    events = events_of(response)
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * 8,
        "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["role"] == "assistant"
    assert events[1][1] == {"type": "content_block_start", "index": 0,
                            "content_block": {"type": "text", "text": ""}}
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == \
        FAKE_TEXT
    assert events[-3][1] == {"type": "content_block_stop", "index": 0}
    assert events[-2][1] == {"type": "message_delta",
                             "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                             "usage": {"input_tokens": 11, "cache_creation_input_tokens": 0,
                                       "cache_read_input_tokens": 0, "output_tokens": 8}}
    assert "stream_options" in fake.history[-1].body  # usage was asked for, for accounting


def test_client_streams(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="gpt-4o-mini", max_tokens=50, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == FAKE_TEXT
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 11 and final.usage.output_tokens == 8


def test_max_tokens_and_stop_sequences(claude: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    message = claude.messages.create(model="gpt-4o-mini", max_tokens=3, messages=USER,
                                     stop_sequences=["STOP", "\n\nHuman:"])
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 3
    assert fake.history[-1].body["stop"] == ["STOP", "\n\nHuman:"]


def test_tool_use_from_an_openai_upstream(claude: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    message = claude.messages.create(model="gpt-4o-mini", max_tokens=100, messages=USER,
                                     tools=TOOLS, tool_choice={"type": "any"})
    assert message.stop_reason == "tool_use"
    block: Any = message.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris"} and block.id == "call_fake1"
    sent = fake.history[-1].body
    assert sent["tool_choice"] == "required"
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": TOOLS[0]["input_schema"]}}]


def test_streamed_tool_use(proxied: GatewayServer, claude: anthropic.Anthropic) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 100, "messages": USER, "tools": TOOLS,
            "tool_choice": {"type": "tool", "name": "get_weather"}, "stream": True}
    events = events_of(post(proxied, body))
    assert [n for n, _ in events][:3] == ["message_start", "content_block_start", "ping"]
    assert events[1][1]["content_block"] == {"type": "tool_use", "id": "call_fake1",
                                             "name": "get_weather", "input": {}}
    pieces = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == 0]
    assert all(p["type"] == "input_json_delta" for p in pieces) and len(pieces) == 2
    assert "".join(p["partial_json"] for p in pieces) == '{"city": "Paris"}'
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    with claude.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Paris"}


def test_tool_results_reach_the_upstream_as_tool_messages(claude: anthropic.Anthropic,
                                                          fake: FakeOpenAI) -> None:
    claude.messages.create(model="gpt-4o-mini", max_tokens=50, tools=TOOLS, messages=[
        *USER,
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C and sunny"}]}])
    assert fake.history[-1].body["messages"][1:] == [
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C and sunny"}]


def test_images_reach_the_upstream(claude: anthropic.Anthropic, fake: FakeOpenAI) -> None:
    url = "https://example.com/cat.png"
    claude.messages.create(model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user",
                                                                          "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": url}},
        {"type": "text", "text": "Describe both."}]}])
    assert fake.history[-1].body["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "Describe both."}]


def test_the_demo_model_speaks_messages(start_gateway: Any) -> None:
    server = start_gateway({"models": [{"name": "demo", "provider": "demo",
                                        "first_token_ms": 0, "token_delay_ms": 0}]})
    claude = anthropic.Anthropic(base_url=server.url, api_key="any", max_retries=0)
    message = claude.messages.create(model="demo", max_tokens=200, messages=[
        {"role": "user", "content": "Hello there, demo"}])
    text = message.content[0].text  # type: ignore[union-attr]
    assert "demo model" in text and "You wrote 3 words" in text
    with claude.messages.stream(model="demo", max_tokens=200, messages=[
            {"role": "user", "content": "Hello there, demo"}]) as stream:
        assert "".join(stream.text_stream) == text
        assert stream.get_final_message().usage.output_tokens == message.usage.output_tokens
    called = claude.messages.create(model="demo", max_tokens=200, tools=TOOLS,
                                    tool_choice={"type": "any"}, messages=USER)
    assert called.stop_reason == "tool_use" and called.content[0].type == "tool_use"


def test_client_disconnect_cancels_the_upstream(proxied: GatewayServer, fake: FakeOpenAI) -> None:
    fake.enqueue(Answer(tokens=500, delay=0.02))
    body = {"model": "gpt-4o-mini", "max_tokens": 1000, "messages": USER, "stream": True}
    with httpx.stream("POST", proxied.url + "/v1/messages", json=body,
                      headers=HEADERS) as response:
        received = [line for _, line in zip(range(9), response.iter_lines(), strict=False)]
        assert received[0] == "event: message_start" and len(received) == 9
    assert fake.wait_for(lambda: fake.history[-1].disconnected, timeout=3)
    assert not fake.history[-1].finished


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    ({"model": "demo", "messages": USER}, "max_tokens: Field required"),
    ({"model": "demo", "max_tokens": 0, "messages": USER},
     "max_tokens: Input should be greater than or equal to 1"),
    ({"max_tokens": 5, "messages": USER}, "model: Field required"),
    ({"model": "demo", "max_tokens": 5, "messages": []},
     "messages: at least one message is required"),
    ({"model": "demo", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]},
     "messages.0.role: Input should be 'user' or 'assistant'"),
    ({"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "data": "x"}}]}]},
     "messages.0.content.0.source.media_type: Field required"),
    ({"model": "demo", "max_tokens": 5, "messages": USER, "temperature": 1.5},
     "temperature: Input should be between 0 and 1"),
    ({"model": "demo", "max_tokens": 5, "messages": USER, "tool_choice": {"type": "tool"}},
     "tool_choice.name: Field required"),
    ({"model": "demo", "max_tokens": 5, "messages": USER, "stream": "yes"},
     "stream: Input should be a valid boolean"),
])
def test_bad_requests_are_400_in_the_messages_envelope(proxied: GatewayServer,
                                                       body: dict[str, Any],
                                                       message: str) -> None:
    assert anthropic_error(post(proxied, body), 400, "invalid_request_error") == message


def test_client_raises_bad_request(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="demo", max_tokens=5, messages=USER,
                               extra_body={"temperature": 3})
    assert info.value.status_code == 400
    assert info.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "temperature: Input should be between 0 and 1"}}


def test_invalid_json_is_400(proxied: GatewayServer) -> None:
    response = httpx.post(proxied.url + "/v1/messages", content=b"{nope", headers=HEADERS)
    anthropic_error(response, 400, "invalid_request_error")


def test_keys_in_x_api_key_or_bearer(proxied: GatewayServer) -> None:
    body = {"model": "demo", "max_tokens": 5, "messages": USER}
    assert post(proxied, body).status_code == 200
    bearer = {"authorization": f"Bearer {MASTER_KEY}", "anthropic-version": "2023-06-01"}
    assert post(proxied, body, headers=bearer).status_code == 200
    anthropic_error(post(proxied, body, headers={}), 401, "authentication_error")
    wrong = {"x-api-key": "sk-wrong", "anthropic-version": "2023-06-01"}
    anthropic_error(post(proxied, body, headers=wrong), 401, "authentication_error")
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=proxied.url, api_key="sk-wrong", max_retries=0
                            ).messages.create(**body)


def test_unknown_model_is_404(proxied: GatewayServer, claude: anthropic.Anthropic,
                              fake: FakeOpenAI) -> None:
    body = {"model": "claude-nope", "max_tokens": 5, "messages": USER, "stream": True}
    assert "claude-nope" in anthropic_error(post(proxied, body), 404, "not_found_error")
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="claude-nope", max_tokens=5, messages=USER)
    assert fake.history == []


@pytest.mark.parametrize(("status", "kind", "exception"), [
    (429, "rate_limit_error", anthropic.RateLimitError),
    (503, "overloaded_error", anthropic.ServiceUnavailableError),
    (500, "api_error", anthropic.InternalServerError),
    (401, "authentication_error", anthropic.AuthenticationError),
])
def test_upstream_errors_in_the_messages_envelope(proxied: GatewayServer,
                                                  claude: anthropic.Anthropic, fake: FakeOpenAI,
                                                  status: int, kind: str,
                                                  exception: type[Exception]) -> None:
    fake.enqueue(*[Fail(status, f"upstream says {status}")] * 6)
    body = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": USER}
    assert anthropic_error(post(proxied, body), status, kind) == f"upstream says {status}"
    with pytest.raises(exception):
        claude.messages.create(**body)


def test_a_broken_stream_ends_with_an_error_event(proxied: GatewayServer,
                                                  claude: anthropic.Anthropic,
                                                  fake: FakeOpenAI) -> None:
    fake.enqueue(Answer(tokens=30, cut_after=10))
    body = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": USER, "stream": True}
    events = events_of(post(proxied, body))
    names = [n for n, _ in events]
    assert names[-1] == "error" and "message_stop" not in names and "message_delta" not in names
    assert events[-1][1]["error"]["type"] == "api_error"
    assert "broke off" in events[-1][1]["error"]["message"]
    fake.enqueue(Answer(tokens=30, cut_after=10))
    with pytest.raises(anthropic.APIStatusError), \
            claude.messages.stream(**{k: v for k, v in body.items() if k != "stream"}) as stream:
        list(stream.text_stream)


def test_wrong_method_and_oversized_body(proxied: GatewayServer, start_gateway: Any) -> None:
    anthropic_error(httpx.get(proxied.url + "/v1/messages", headers=HEADERS), 405,
                    "invalid_request_error")
    small = start_gateway({"server": {"max_request_mb": 0.001},
                           "models": [{"name": "demo", "provider": "demo"}]})
    body = {"model": "demo", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 5000}]}
    anthropic_error(post(small, body), 413, "request_too_large")


def test_messages_clients_list_models_in_their_shape(proxied: GatewayServer,
                                                    claude: anthropic.Anthropic) -> None:
    listing = httpx.get(proxied.url + "/v1/models", headers=HEADERS).json()
    assert set(listing) == {"data", "has_more", "first_id", "last_id"}
    assert [m["id"] for m in listing["data"]] == ["gpt-4o-mini", "demo"]
    for info in listing["data"]:
        model = anthropic.types.ModelInfo.model_validate(info)
        assert model.type == "model" and not model.model_extra
    assert (listing["has_more"], listing["first_id"], listing["last_id"]) == (
        False, "gpt-4o-mini", "demo")
    assert [m.id for m in claude.models.list()] == ["gpt-4o-mini", "demo"]
    assert claude.models.retrieve("demo").display_name == "demo"
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.models.retrieve("nope")
    assert info.value.body == {"type": "error", "error": {
        "type": "not_found_error",
        "message": "The model `nope` does not exist or you do not have access to it."}}
    anthropic_error(httpx.get(proxied.url + "/v1/models",
                              headers={"anthropic-version": "2023-06-01"}),
                    401, "authentication_error")
    assert httpx.get(proxied.url + "/v1/models", headers={"x-api-key": MASTER_KEY}).json()[
        "object"] == "list"  # without anthropic-version: the OpenAI shape


def test_openapi_docs_describe_the_messages_routes(proxied: GatewayServer) -> None:
    document = httpx.get(proxied.url + "/openapi.json").json()
    assert {"/v1/messages", "/v1/messages/count_tokens"} <= set(document["paths"])
    request = document["components"]["schemas"]["MessagesRequest"]
    assert {"model", "messages", "max_tokens"} <= set(request["required"])

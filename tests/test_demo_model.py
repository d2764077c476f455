"""The demo model through the official openai client: what a newcomer sees first."""

from __future__ import annotations

import base64
import struct
from typing import Any

import openai
import pytest

from tests.conftest import demo_config
from tests.support import spec


@pytest.fixture
def demo(start_gateway: Any) -> openai.OpenAI:
    server = start_gateway(demo_config())
    return openai.OpenAI(base_url=server.url + "/v1", api_key="anything", max_retries=0)


def test_lists_and_retrieves_the_demo_model(demo: openai.OpenAI) -> None:
    models = demo.models.list()
    assert [m.id for m in models.data] == ["demo"]
    assert demo.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError):
        demo.models.retrieve("missing")


def test_chat_answer_is_deterministic_and_counts_its_tokens(demo: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Tell me about gateways please"}]
    first = demo.chat.completions.create(model="demo", messages=messages)
    second = demo.chat.completions.create(model="demo", messages=messages)
    spec.check(first.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
    text = first.choices[0].message.content
    assert text == second.choices[0].message.content
    assert "demo" in text and '"Tell me about gateways please"' in text
    assert "demo" in first.model
    assert first.usage is not None
    assert first.usage.completion_tokens == len(text.split())
    assert first.choices[0].finish_reason == "stop"


def test_stream_sends_token_by_token_then_usage(demo: openai.OpenAI) -> None:
    stream = demo.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    for chunk in chunks:
        spec.check(chunk.model_dump(mode="json", exclude_unset=True),
                   "CreateChatCompletionStreamResponse")
    content = [c.choices[0].delta.content for c in chunks
               if c.choices and c.choices[0].delta.content]
    assert len(content) > 5  # one token per chunk, not one blob
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(content)
    nonstream = demo.chat.completions.create(model="demo",
                                             messages=[{"role": "user", "content": "hi"}])
    assert "".join(content) == nonstream.choices[0].message.content


def test_max_tokens_stop_and_n(demo: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "one two three"}]
    short = demo.chat.completions.create(model="demo", messages=messages, max_tokens=3, n=2)
    assert len(short.choices) == 2
    assert all(c.finish_reason == "length" for c in short.choices)
    assert len(short.choices[0].message.content.split()) == 3
    stopped = demo.chat.completions.create(model="demo", messages=messages, stop=["demo"])
    assert stopped.choices[0].finish_reason == "stop"
    assert "demo" not in stopped.choices[0].message.content


def test_forced_tool_call_streams_argument_deltas(demo: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}}, "required": ["city"]}}}]
    messages: Any = [{"role": "user", "content": "weather?"}]
    answer = demo.chat.completions.create(model="demo", messages=messages, tools=tools,
                                          tool_choice="required")
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and call.function.arguments == '{"city":"demo"}'
    stream = demo.chat.completions.create(model="demo", messages=messages, tools=tools,
                                          tool_choice="required", stream=True)
    arguments = ""
    for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            arguments += delta_call.function.arguments or ""
    assert arguments == call.function.arguments


def test_embeddings_float_and_base64_agree(demo: openai.OpenAI) -> None:
    floats = demo.embeddings.create(model="demo", input=["a cat", "a dog"])
    spec.check(floats.model_dump(mode="json", exclude_unset=True), "CreateEmbeddingResponse")
    assert len(floats.data) == 2 and len(floats.data[0].embedding) == 256
    raw = demo.embeddings.with_raw_response.create(model="demo", input="a cat",
                                                   encoding_format="base64")
    encoded = raw.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack("<256f", base64.b64decode(encoded))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-6)


def test_legacy_completions(demo: openai.OpenAI) -> None:
    answer = demo.completions.create(model="demo", prompt="Say something", max_tokens=4)
    spec.check(answer.model_dump(mode="json", exclude_unset=True), "CreateCompletionResponse")
    assert answer.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in demo.completions.create(
        model="demo", prompt="Say something", max_tokens=4, stream=True) if c.choices)
    assert streamed == answer.choices[0].text

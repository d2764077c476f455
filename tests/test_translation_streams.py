"""Streams translated both ways, event by event, on recorded streams of both APIs.

Messages events become OpenAI chunks (checked against OpenAI's schema) and
OpenAI chunks become Messages events (checked against the ``anthropic`` SDK's
types, in the API's order); a Messages stream survives the round trip.
"""

from __future__ import annotations

from typing import Any

import pytest

from llmport.translation.messages_to_openai import chat_completion
from llmport.translation.messages_to_openai_stream import ChunkStream
from llmport.translation.openai_to_messages import message_response
from llmport.translation.openai_to_messages_stream import MessageEvents
from llmport.types import Usage
from tests.support import spec
from tests.support.fixtures import load, sse
from tests.support.messages_shapes import event_problems


def stream_to_chunks(name: str) -> tuple[list[dict[str, Any]], ChunkStream]:
    translator = ChunkStream(created=1700000000)
    chunks = [c for _, data in sse(name) for c in translator.feed(data)]
    return chunks, translator


def chunks_to_events(chunks: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    events = MessageEvents("m", None)
    out = [e for chunk in chunks for e in events.feed(chunk)]
    return out + events.close()


def test_message_events_become_chunks() -> None:
    chunks, translator = stream_to_chunks("messages/stream_tool_use.sse")
    assert translator.done
    for chunk in chunks:
        spec.check(chunk, "CreateChatCompletionStreamResponse")
    assert {c["id"] for c in chunks} == {"msg_014p7gG3wDgGV9EUtLvnow3U"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content") or "" for d in deltas) == \
        "Okay, let's check the weather for San Francisco, CA:"
    calls = [call for d in deltas for call in d.get("tool_calls") or ()]
    assert calls[0] == {"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert "".join(c["function"]["arguments"] for c in calls) == \
        '{"location": "San Francisco, CA", "unit": "fahrenheit"}'
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "tool_calls" and finishes.count(None) == len(finishes) - 1
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == Usage(472, 89).to_openai()


def test_chunks_become_message_events() -> None:
    chunks = [data for _, data in sse("openai/stream_tool_calls.sse") if data != "[DONE]"]
    events = chunks_to_events(chunks)
    assert [name for name, _ in events] == [
        "message_start", "content_block_start", "ping", *["content_block_delta"] * 7,
        "content_block_stop", "message_delta", "message_stop"]
    for name, data in events:
        assert data["type"] == name and event_problems(data) == []
    assert events[0][1]["message"]["id"] == "msg_AQ7dYpQzmaS5E0cN9lJBmGGuRmkFw"
    assert events[1][1]["content_block"] == {"type": "tool_use", "name": "get_weather",
                                             "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "input": {}}
    assert "".join(d["delta"]["partial_json"] for n, d in events
                   if n == "content_block_delta") == '{"location":"Paris, France"}'
    assert events[-2][1] == {"type": "message_delta", "delta": {
        "stop_reason": "tool_use", "stop_sequence": None}, "usage": {
        "input_tokens": 61, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
        "output_tokens": 16}}


def test_text_chunks_become_one_text_block() -> None:
    chunks = [data for _, data in sse("openai/stream_text.sse") if data != "[DONE]"]
    events = chunks_to_events(chunks)
    assert [name for name, _ in events][:3] == ["message_start", "content_block_start", "ping"]
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == "Hello! How can I help?"
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
    assert events[-2][1]["usage"]["output_tokens"] == 7


@pytest.mark.parametrize("name", ["messages/stream_text.sse", "messages/stream_tool_use.sse"])
def test_a_message_stream_survives_the_round_trip(name: str) -> None:
    original = [(event, data) for event, data in sse(name)
                if data.get("delta", {}).get("partial_json") != ""]  # empty deltas say nothing
    chunks, _ = stream_to_chunks(name)
    again = chunks_to_events(chunks)
    assert [n for n, _ in again] == [n for n, _ in original]
    for (_, mine), (_, theirs) in zip(again, original, strict=True):
        if mine["type"] in ("content_block_start", "content_block_delta", "content_block_stop"):
            assert mine == theirs
    assert again[-2][1]["delta"] == original[-2][1]["delta"]
    assert again[-2][1]["usage"]["output_tokens"] == original[-2][1]["usage"]["output_tokens"]
    assert again[0][1]["message"]["id"] == original[0][1]["message"]["id"]


def test_the_matched_stop_sequence_is_kept_both_ways() -> None:
    message = {**load("messages/message_tool_use.json"), "stop_reason": "stop_sequence",
                "stop_sequence": "\n\nHuman:", "content": [{"type": "text", "text": "Hi"}]}
    completion = chat_completion(message, 0)
    spec.check(completion, "CreateChatCompletionResponse")
    again = message_response(completion, model="m", stop_sequences=["\n\nHuman:"])
    assert (again["stop_reason"], again["stop_sequence"]) == ("stop_sequence", "\n\nHuman:")
    translator = ChunkStream(0)
    chunks = [c for event in ({"type": "message_start", "message": message},
                              {"type": "message_delta", "usage": {"output_tokens": 1},
                               "delta": {"stop_reason": "stop_sequence",
                                         "stop_sequence": "\n\nHuman:"}})
              for c in translator.feed(event)]
    events = MessageEvents("m", ["\n\nHuman:"])
    for chunk in chunks:
        spec.check(chunk, "CreateChatCompletionStreamResponse")
        events.feed(chunk)
    assert events.close()[-2][1]["delta"] == {"stop_reason": "stop_sequence",
                                              "stop_sequence": "\n\nHuman:"}


def test_reasoning_becomes_thinking_when_the_client_asked() -> None:
    base = {"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": 0, "model": "r1"}
    chunks = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
              for delta, finish in [({"role": "assistant", "reasoning_content": "Six "}, None),
                                    ({"reasoning": "sevens."}, None),  # vLLM's newer name
                                    ({"content": "42"}, None), ({}, "stop")]]
    events = MessageEvents("m", None, thinking=True)
    out = [e for chunk in chunks for e in events.feed(chunk)] + events.close()
    for _, data in out:
        assert event_problems(data) == []
    assert [(n, d.get("index"), d.get("delta") or d.get("content_block")) for n, d in out
            if n.startswith("content_block")] == [
        ("content_block_start", 0, {"type": "thinking", "thinking": "", "signature": ""}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": "Six "}),
        ("content_block_delta", 0, {"type": "thinking_delta", "thinking": "sevens."}),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, {"type": "text", "text": ""}),
        ("content_block_delta", 1, {"type": "text_delta", "text": "42"}),
        ("content_block_stop", 1, None)]
    hidden = MessageEvents("m", None)  # not asked for: not shown, as the Messages API does
    names = [n for chunk in chunks for n, _ in hidden.feed(chunk)]
    assert names.count("content_block_start") == 1
    completion = {"choices": [{"message": {"role": "assistant", "content": "42",
                                           "reasoning_content": "Six sevens."},
                               "finish_reason": "stop"}]}
    message = message_response(completion, model="m", stop_sequences=None, thinking=True)
    assert message["content"] == [
        {"type": "thinking", "thinking": "Six sevens.", "signature": ""},
        {"type": "text", "text": "42"}]
    assert message_response(completion, model="m", stop_sequences=None)["content"] == [
        {"type": "text", "text": "42"}]

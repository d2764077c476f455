"""The OpenAI ⇄ Messages translation, both ways, on recorded payloads of both APIs.

Pure functions, no server: requests and responses are translated
from the fixtures in tests/fixtures/ and checked field by field, against the
official OpenAI schema and the official ``anthropic`` SDK's types.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from llmport.api.anthropic.validation import validate_messages
from llmport.api.openai.validation import validate_chat
from llmport.errors import InvalidRequestError
from llmport.translation.messages_to_openai import chat_completion, chat_request
from llmport.translation.openai_to_messages import (
    message_response,
    messages_request,
    stop_reason,
    tool_input,
)
from llmport.types import Usage
from tests.support import spec
from tests.support.fake_anthropic import semantic_problems
from tests.support.fixtures import load
from tests.support.messages_shapes import message_problems, request_problems

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
       "rkJggg==")
ANT_URL = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
WEATHER = {"type": "object", "properties": {
    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["location"]}
TOOL_ID = "toolu_01A09q90qw90lq917835lq9"


def to_messages(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    result = messages_request({"model": "m", **body}, model="claude-x", default_max_tokens=4096)
    assert request_problems(result) == [] and semantic_problems(result) == [], result
    return {**result, **extra}


# -- requests ----------------------------------------------------------------------------------

def test_messages_request_becomes_an_openai_request() -> None:
    body = load("messages/request_conversation.json")
    validate_messages(body)
    result = chat_request(body)
    assert result == {
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "You are a helpful travel assistant."},
                {"type": "text", "text": "Answer in one sentence."}]},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
                {"type": "image_url", "image_url": {"url": ANT_URL}},
                {"type": "text", "text": "Itinerary: Paris, then Lyon."},
                {"type": "text", "text": "What is the weather where I land first?"}]},
            {"role": "assistant", "content": "I'll check the current weather in Paris for you.",
             "tool_calls": [{"id": TOOL_ID, "type": "function", "function": {
                 "name": "get_weather",
                 "arguments": '{"location":"Paris, France","unit":"celsius"}'}}]},
            {"role": "tool", "tool_call_id": TOOL_ID, "content": "15 degrees, light rain"},
            {"role": "user", "content": [{"type": "text",
                                          "text": "And should I pack an umbrella?"}]}],
        "max_tokens": 1024, "temperature": 0.7, "top_k": 40, "stop": ["\n\nHuman:"],
        "user": "13803d75-b4b5-4c3e-b2a2-6f21399b021b",
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "parameters": WEATHER,
            "description": "Get the current weather in a given location"}}],
        "tool_choice": "auto", "parallel_tool_calls": False}
    assert validate_chat(result) == ("claude-sonnet-4-5", False)
    spec.check({k: v for k, v in result.items() if k != "top_k"}, "CreateChatCompletionRequest")


def test_openai_request_becomes_a_messages_request() -> None:
    body = load("openai/request_conversation.json")
    result = messages_request(body, model="claude-x", default_max_tokens=4096)
    assert result == {
        "model": "claude-x",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these images?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}},
                {"type": "image", "source": {
                    "type": "url", "url": body["messages"][2]["content"][2]["image_url"]["url"]}}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_abc123", "name": "get_weather",
                 "input": {"location": "Paris, France"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_abc123",
                 "content": "15 degrees, light rain"},
                {"type": "text", "text": "Should I pack an umbrella?"}]}],
        "max_tokens": 300,
        "system": [{"type": "text", "text": "You are a helpful travel assistant."},
                   {"type": "text", "text": "Answer in one sentence."}],
        "temperature": 1.0,  # clamped from 1.3: the Messages API allows 0 to 1
        "top_p": 0.9, "stop_sequences": ["END"], "metadata": {"user_id": "user-1234"},
        "tools": [{"name": "get_weather", "input_schema": WEATHER, "strict": True,
                   "description": "Get the current weather in a given location"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "output_config": {"format": {"type": "json_schema", "schema": body["response_format"][
            "json_schema"]["schema"]}}}
    assert request_problems(result) == []
    assert semantic_problems(result) == []


def test_a_messages_request_survives_the_round_trip() -> None:
    body = load("messages/request_conversation.json")
    back = messages_request(chat_request(body), model=body["model"], default_max_tokens=1)
    original = orjson.loads(orjson.dumps(body))
    del original["system"][1]["cache_control"]  # not expressible in OpenAI's form
    document = original["messages"][0]["content"][2]  # a text document is text to OpenAI
    original["messages"][0]["content"][2] = {"type": "text", "text": document["source"]["data"]}
    assert back == original


@pytest.mark.parametrize(("body", "expected"), [
    ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "none",
      "tools": [{"type": "function", "function": {"name": "f"}}]},
     {"tool_choice": {"type": "none"}, "tools": [
         {"name": "f", "input_schema": {"type": "object", "properties": {}}}]}),
    ({"messages": [{"role": "user", "content": "hi"}], "parallel_tool_calls": False,
      "tools": [{"type": "function", "function": {"name": "f", "parameters": WEATHER}}]},
     {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
    ({"messages": [{"role": "user", "content": "hi"}], "stop": "END", "max_tokens": 7},
     {"stop_sequences": ["END"], "max_tokens": 7}),
])
def test_openai_options_translate(body: dict[str, Any], expected: dict[str, Any]) -> None:
    result = to_messages(body)
    assert {k: result[k] for k in expected} == expected


def test_tool_results_in_a_row_share_one_user_turn() -> None:
    calls = [{"id": f"call_{i}", "type": "function",
              "function": {"name": "f", "arguments": f'{{"i": {i}}}'}} for i in (1, 2)]
    result = to_messages({"messages": [
        {"role": "user", "content": "twice"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "one"}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"},
        {"role": "user", "content": "thanks"}]})
    assert result["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"i": 1}},
            {"type": "tool_use", "id": "call_2", "name": "f", "input": {"i": 2}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1",
             "content": [{"type": "text", "text": "one"}]},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "two"},
            {"type": "text", "text": "thanks"}]}]


def test_legacy_function_messages_and_a_choice_without_tools() -> None:
    result = to_messages({"tool_choice": "none", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None,
         "function_call": {"name": "f", "arguments": '{"a": 1}'}},
        {"role": "function", "name": "f", "content": "done"}]})
    assert "tool_choice" not in result  # the Messages API wants tools with a tool_choice
    assert result["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "call_legacy",
                                           "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_legacy",
                                      "content": "done"}]}]


def test_prefill_loses_its_trailing_whitespace() -> None:
    result = to_messages({"messages": [{"role": "user", "content": "Pick (A) or (B)"},
                                       {"role": "assistant", "content": "The answer is ( \n"}]})
    assert result["messages"][-1] == {"role": "assistant", "content": [
        {"type": "text", "text": "The answer is ("}]}
    blank = to_messages({"messages": [{"role": "user", "content": "x"},
                                      {"role": "assistant", "content": "  "}]})
    assert [m["role"] for m in blank["messages"]] == ["user"]


def test_pdf_files_become_documents_and_back() -> None:
    data = "data:application/pdf;base64,JVBERi0xLjQK"
    result = to_messages({"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": data}}]}]})
    document = result["messages"][0]["content"][0]
    assert document == {"type": "document", "title": "a.pdf", "source": {
        "type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}}
    back = chat_request({"model": "m", "max_tokens": 5,
                         "messages": [{"role": "user", "content": [document]}]})
    assert back["messages"][0]["content"] == [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": data}}]


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "listen"}, {"type": "input_audio", "input_audio": {}}]}]},
     "messages[0].content[1].type"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": ["oops"]}]},
     "messages[0].tool_calls[0].function"),
    ({"tool_choice": {"type": "allowed_tools", "allowed_tools": {}},
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "tool_choice"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}, "tools[0].type"),
])
def test_what_messages_cannot_say_is_a_clear_400(body: dict[str, Any], param: str) -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    with pytest.raises(InvalidRequestError) as info:
        messages_request(request, model="claude-x", default_max_tokens=5)
    assert info.value.param == param and info.value.status == 400


def test_inbound_specials_translate() -> None:
    body = {"model": "m", "max_tokens": 5, "tool_choice": {"type": "tool", "name": "f"},
            "output_config": {"format": {"type": "json_schema", "schema": WEATHER}},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                              "is_error": True, "content": [
                    {"type": "text", "text": "see picture"},
                    {"type": "image", "source": {"type": "url", "url": ANT_URL}}]}]}]}
    validate_messages(body)
    result = chat_request(body)
    assert result["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert result["response_format"] == {"type": "json_schema",
                                         "json_schema": {"name": "output", "schema": WEATHER}}
    assert result["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "see picture"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": ANT_URL}}]}]
    with pytest.raises(InvalidRequestError) as info:
        chat_request({**body, "tools": [{"type": "web_search_20250305", "name": "web_search"}]})
    assert info.value.param == "tools.0.type"


# -- responses ---------------------------------------------------------------------------------

def test_a_message_becomes_a_chat_completion() -> None:
    result = chat_completion(load("messages/message_tool_use.json"), created=1700000000)
    assert result == {
        "id": "msg_01Aq9w938a90dw8q", "object": "chat.completion", "created": 1700000000,
        "model": "claude-sonnet-4-5-20250929",
        "choices": [{"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "refusal": None, "annotations": [],
            "content": "I'll check the current weather in San Francisco for you.",
            "tool_calls": [{"id": TOOL_ID, "type": "function", "function": {
                "name": "get_weather",
                "arguments": '{"location":"San Francisco, CA","unit":"celsius"}'}}]}}],
        # prompt = input 472 + cache writes 100 + cache reads 2048; cached = the reads
        "usage": Usage(prompt_tokens=2620, completion_tokens=89, cached_tokens=2048).to_openai()}
    spec.check(result, "CreateChatCompletionResponse")


def test_a_chat_completion_becomes_a_message() -> None:
    result = message_response(load("openai/completion_tool_calls.json"), model="m",
                              stop_sequences=None)
    assert result == {
        "id": "msg_abc123", "type": "message", "role": "assistant",
        "model": "gpt-4o-mini-2024-07-18",
        "content": [{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather",
                     "input": {"location": "Boston, MA"}}],
        "stop_reason": "tool_use", "stop_sequence": None,
        "usage": {"input_tokens": 18, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 64, "output_tokens": 17}}
    assert message_problems(result) == []


@pytest.mark.parametrize(("choice", "stops", "tools", "expected"), [
    ({"finish_reason": "stop"}, None, False, ("end_turn", None)),
    ({"finish_reason": "length"}, None, False, ("max_tokens", None)),
    ({"finish_reason": "tool_calls"}, None, True, ("tool_use", None)),
    ({"finish_reason": "stop"}, None, True, ("tool_use", None)),  # servers that say "stop"
    ({"finish_reason": "content_filter"}, None, False, ("refusal", None)),
    ({"finish_reason": "stop", "stop_reason": "END"}, ["END"], False, ("stop_sequence", "END")),
    ({"finish_reason": "stop", "stop_reason": 128009}, ["END"], False, ("end_turn", None)),
    ({"finish_reason": None}, None, False, ("end_turn", None)),
])
def test_stop_reasons(choice: dict[str, Any], stops: list[str] | None, tools: bool,
                      expected: tuple[str, str | None]) -> None:
    assert stop_reason(choice, stops, tools) == expected


@pytest.mark.parametrize(("reason", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"), ("pause_turn", "stop")])
def test_finish_reasons(reason: str, finish: str) -> None:
    message = {**load("messages/message_tool_use.json"), "stop_reason": reason}
    assert chat_completion(message, 0)["choices"][0]["finish_reason"] == finish


def test_arguments_that_are_not_an_object_are_kept() -> None:
    assert tool_input('{"a": 1}') == {"a": 1}
    assert tool_input("not json") == {"arguments": "not json"}
    assert tool_input("[1, 2]") == {"arguments": [1, 2]}
    assert tool_input("") == {}

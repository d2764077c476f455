"""The Responses API (``/v1/responses``) with the official ``openai`` client: any model behind
it (an OpenAI-compatible upstream, an Anthropic one), streamed events in OpenAI's order,
function calls both ways, and stored conversations continued by ``previous_response_id``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import claude_config
from tests.support.admin import MASTER_KEY, Admin, priced_upstream, tenancy_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_openai import Answer, FakeOpenAI
from tests.support.servers import GatewayServer
from tests.support.spec import check

Start = Callable[[dict[str, Any]], GatewayServer]
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


@pytest.fixture
def server(fake: FakeOpenAI, start_gateway: Start) -> GatewayServer:
    config = tenancy_config()
    config["models"].append(priced_upstream(fake.url))
    return start_gateway(config)


def client(server: GatewayServer, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def sent(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.body for r in fake.history if r.path.endswith("/chat/completions")]


def raw_events(server: GatewayServer, body: dict[str, Any], key: str = MASTER_KEY
               ) -> list[tuple[str, dict[str, Any]]]:
    with httpx.stream("POST", server.url + "/v1/responses", json={**body, "stream": True},
                      headers={"authorization": f"Bearer {key}"}, timeout=30) as reply:
        assert reply.status_code == 200, reply.read()
        assert reply.headers["content-type"].startswith("text/event-stream")
        text = reply.read().decode()
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


def test_a_response_from_a_chat_upstream(server: GatewayServer, fake: FakeOpenAI) -> None:
    reply = httpx.post(server.url + "/v1/responses", headers={
        "authorization": f"Bearer {MASTER_KEY}"}, json={
        "model": "gpt-4o-mini", "input": "Hello there", "instructions": "Be brief.",
        "max_output_tokens": 50, "temperature": 0.2, "metadata": {"run": "1"}}, timeout=30)
    assert reply.status_code == 200, reply.text
    check(reply.json(), "Response")
    response = client(server).responses.retrieve(reply.json()["id"])  # stored by default
    assert response.status == "completed" and response.id.startswith("resp_")
    assert response.output_text == "Hello from the fake upstream , answering every"
    assert response.usage is not None and response.usage.input_tokens == 11
    assert response.usage.output_tokens == 8 and response.metadata == {"run": "1"}
    assert response.instructions == "Be brief." and response.temperature == 0.2
    upstream = sent(fake)[0]
    assert upstream["messages"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Hello there"}]
    assert upstream["max_completion_tokens"] == 50 and upstream["temperature"] == 0.2
    assert "max_tokens" not in upstream


def test_a_streamed_response_has_openais_events_in_order(server: GatewayServer,
                                                         fake: FakeOpenAI) -> None:
    events = raw_events(server, {"model": "gpt-4o-mini", "input": "Hi"})
    names = [name for name, _ in events]
    deltas = names.count("response.output_text.delta")
    assert deltas == 8
    assert names == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * deltas,
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    for name, data in events:
        assert data["type"] == name
        check(data, "ResponseStreamEvent")
    final = events[-1][1]["response"]
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert final["output"][0]["content"][0]["text"] == text
    assert final["usage"]["output_tokens"] == 8 and final["status"] == "completed"
    assert sent(fake)[0]["stream_options"] == {"include_usage": True}

    # The SDK's own stream helper, which checks the events' consistency as it folds them.
    with client(server).responses.stream(model="gpt-4o-mini", input="Hi") as stream:
        got = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        assert stream.get_final_response().output_text == got == text


def test_function_calls_both_ways_streamed_and_not(server: GatewayServer,
                                                  fake: FakeOpenAI) -> None:
    api = client(server)
    first = api.responses.create(model="gpt-4o-mini", input="Weather in Paris?",
                                 tools=[WEATHER], tool_choice="required")  # type: ignore[list-item]
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city": "Paris"}' and call.call_id == "call_fake1"
    assert sent(fake)[0]["tools"] == [{"type": "function", "function": {
        k: v for k, v in WEATHER.items() if k != "type"}}]

    second = api.responses.create(model="gpt-4o-mini", previous_response_id=first.id, input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"}])
    assert second.status == "completed" and second.output_text
    assert second.previous_response_id == first.id
    assert sent(fake)[1]["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_fake1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_fake1", "content": "18 C, sunny"}]

    events = raw_events(server, {"model": "gpt-4o-mini", "input": "Weather?", "tools": [WEATHER],
                                 "tool_choice": {"type": "function", "name": "get_weather"}})
    names = [name for name, _ in events]
    assert "response.function_call_arguments.delta" in names
    done = next(d for n, d in events if n == "response.function_call_arguments.done")
    assert done["name"] == "get_weather" and done["arguments"] == '{"city": "Paris"}'
    final = events[-1][1]["response"]
    # (the fake streams its words after a forced call, so a message follows it)
    assert [item["type"] for item in final["output"]] == ["function_call", "message"]
    assert final["output"][0]["call_id"] == "call_fake1"
    # one item after the other, as OpenAI sends them: the call is done before the message
    call_done = next(i for i, (n, d) in enumerate(events)
                     if n == "response.output_item.done" and d["item"]["type"] == "function_call")
    message_added = next(i for i, (n, d) in enumerate(events)
                         if n == "response.output_item.added" and d["item"]["type"] == "message")
    assert call_done < message_added
    for _, data in events:
        check(data, "ResponseStreamEvent")


def test_conversations_continue_by_previous_response_id(server: GatewayServer,
                                                        fake: FakeOpenAI) -> None:
    api = client(server)
    first = api.responses.create(model="gpt-4o-mini", input="My name is Ada.",
                                 instructions="Turn one's instructions.")
    second = api.responses.create(model="gpt-4o-mini", input="What is my name?",
                                  previous_response_id=first.id, stream=False)
    third = api.responses.create(model="gpt-4o-mini", input="And again?",
                                 previous_response_id=second.id)
    messages = sent(fake)[2]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "My name is Ada."), ("assistant", first.output_text),
        ("user", "What is my name?"), ("assistant", second.output_text),
        ("user", "And again?")]  # instructions are not carried over, as with OpenAI
    items = api.responses.input_items.list(third.id)
    assert [i.content[0].text for i in items.data] == ["And again?"]  # type: ignore[union-attr]

    unstored = api.responses.create(model="gpt-4o-mini", input="Forget this", store=False)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(unstored.id)
    with pytest.raises(openai.NotFoundError) as missing:
        api.responses.create(model="gpt-4o-mini", input="x", previous_response_id=unstored.id)
    assert missing.value.body["param"] == "previous_response_id"  # type: ignore[index]

    stranger = client(server, Admin(server.url).key()["key"])
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(model="gpt-4o-mini", input="x", previous_response_id=first.id)
    deleted = api.responses.delete(first.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(first.id)
    assert api.responses.retrieve(second.id).id == second.id  # the rest stays
    # and still continues from the start: the deleted turn's messages were handed on
    api.responses.create(model="gpt-4o-mini", input="Once more?", previous_response_id=third.id)
    assert [m["content"] for m in sent(fake)[-1]["messages"]] == [
        "My name is Ada.", first.output_text, "What is my name?", second.output_text,
        "And again?", third.output_text, "Once more?"]


def test_a_token_limit_makes_an_incomplete_response(server: GatewayServer) -> None:
    api = client(server)
    cut = api.responses.create(model="gpt-4o-mini", input="Go on", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"
    events = raw_events(server, {"model": "gpt-4o-mini", "input": "Go on",
                                 "max_output_tokens": 3})
    assert events[-1][0] == "response.incomplete"
    check(events[-1][1], "ResponseStreamEvent")


def test_a_stream_that_breaks_ends_with_error_and_response_failed(server: GatewayServer,
                                                                  fake: FakeOpenAI) -> None:
    fake.enqueue(Answer(cut_after=3))
    events = raw_events(server, {"model": "gpt-4o-mini", "input": "Hi"})
    names = [name for name, _ in events]
    assert names[-2:] == ["error", "response.failed"]
    assert events[-1][1]["response"]["status"] == "failed"
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    for _, data in events:
        check(data, "ResponseStreamEvent")


def test_what_chat_cannot_carry_is_refused_by_name(server: GatewayServer) -> None:
    api = client(server)
    refusals = [
        ({"tools": [{"type": "web_search"}]}, "tools.0"),
        ({"background": True}, "background"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input.0.type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "input.0.content.0"),
        ({"temperature": 3}, "temperature"),
        ({"text": {"format": {"type": "json_schema"}}}, "text.format"),
    ]
    for change, param in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            api.responses.create(**{"model": "gpt-4o-mini", "input": "x", **change})
        assert refused.value.body["param"] == param, refused.value.body  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as unknown:
        api.responses.create(model="no-such-model", input="x")
    assert unknown.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError):
        client(server, "sk-wrong").responses.create(model="gpt-4o-mini", input="x")


def test_any_model_answers_even_an_anthropic_one(messages_upstream: FakeAnthropic,
                                                 start_gateway: Start) -> None:
    server = start_gateway(claude_config(messages_upstream))
    api = client(server)
    response = api.responses.create(model="claude", input="Hello", instructions="Be brief.",
                                    max_output_tokens=64)
    assert response.status == "completed" and response.output_text
    upstream = messages_upstream.history[-1].body
    system = upstream["system"]
    assert (system if isinstance(system, str) else system[0]["text"]) == "Be brief."
    assert upstream["max_tokens"] == 64
    with api.responses.stream(model="claude", input="Hello") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
    assert text and stream.get_final_response().output_text == text


async def test_stored_responses_older_than_the_retention_are_purged(tmp_path: Any) -> None:
    from datetime import timedelta

    from llmport.db.database import Database
    from llmport.db.job_models import StoredResponse
    from llmport.db.jobs import now
    from llmport.db.responses import ResponseTables

    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'responses.db'}")
    await database.upgrade()
    try:
        tables = ResponseTables(database.sessions)
        for response_id in ("resp_old", "resp_new"):
            await tables.save("me", {"id": response_id}, [], [])
        async with database.sessions.begin() as session:
            old = await session.get(StoredResponse, "resp_old")
            assert old is not None
            old.created_at = now() - timedelta(days=31)
        assert await tables.purge(now() - timedelta(days=30)) == 1
        assert await tables.get("me", "resp_old") is None
        assert await tables.get("me", "resp_new") is not None
    finally:
        await database.aclose()

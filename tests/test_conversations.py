"""The Conversations API with the official ``openai`` client: items kept in order, read by
responses as their history and extended with each turn, owned by their maker."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.support.admin import MASTER_KEY, Admin, priced_upstream, tenancy_config
from tests.support.fake_openai import FakeOpenAI
from tests.support.servers import GatewayServer
from tests.support.spec import check

Start = Callable[[dict[str, Any]], GatewayServer]


@pytest.fixture
def server(fake: FakeOpenAI, start_gateway: Start) -> GatewayServer:
    config = tenancy_config()
    config["models"].append(priced_upstream(fake.url))
    return start_gateway(config)


def client(server: GatewayServer, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def asked(fake: FakeOpenAI) -> list[list[tuple[str, Any]]]:
    return [[(m["role"], m["content"]) for m in r.body["messages"]] for r in fake.history
            if r.path.endswith("/chat/completions")]


def raw(server: GatewayServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, server.url + path, timeout=30,
                         headers={"authorization": f"Bearer {MASTER_KEY}"}, **kwargs)


def test_responses_read_and_extend_their_conversation(server: GatewayServer,
                                                      fake: FakeOpenAI) -> None:
    api = client(server)
    created = raw(server, "POST", "/v1/conversations", json={
        "metadata": {"topic": "names"},
        "items": [{"type": "message", "role": "user", "content": "My name is Ada."}]})
    assert created.status_code == 200, created.text
    check(created.json(), "ConversationResource")
    conversation = created.json()["id"]

    first = api.responses.create(model="gpt-4o-mini", input="What is my name?",
                                 conversation=conversation, instructions="Be brief.")
    assert first.conversation is not None and first.conversation.id == conversation
    second = api.responses.create(model="gpt-4o-mini", input="Spell it.",
                                  conversation={"id": conversation}, store=False)
    assert asked(fake) == [
        [("system", "Be brief."), ("user", "My name is Ada."), ("user", "What is my name?")],
        [("user", "My name is Ada."), ("user", "What is my name?"),
         ("assistant", first.output_text), ("user", "Spell it.")]]

    listed = raw(server, "GET", f"/v1/conversations/{conversation}/items",
                 params={"order": "asc"}).json()
    check(listed, "ConversationItemList")
    texts = [(i["role"], i["content"][0]["text"]) for i in listed["data"]]
    assert texts == [("user", "My name is Ada."), ("user", "What is my name?"),
                     ("assistant", first.output_text), ("user", "Spell it."),
                     ("assistant", second.output_text)]
    assert listed["data"][2]["id"] == first.output[0].id  # the response's own output item
    newest = api.conversations.items.list(conversation, limit=2)
    assert [i.id for i in newest.data] == [listed["data"][4]["id"], listed["data"][3]["id"]]
    assert newest.has_more


def test_items_are_added_fetched_and_removed(server: GatewayServer, fake: FakeOpenAI) -> None:
    api = client(server)
    conversation = api.conversations.create(metadata={"a": "1"})
    added = api.conversations.items.create(conversation.id, items=[
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 C"}])
    assert [i.type for i in added.data] == ["message", "function_call", "function_call_output"]
    call = api.conversations.items.retrieve(added.data[1].id, conversation_id=conversation.id)
    assert call.type == "function_call" and call.call_id == "call_1"  # type: ignore[union-attr]

    api.responses.create(model="gpt-4o-mini", input="So?", conversation=conversation.id)
    sent = [r.body for r in fake.history if r.path.endswith("/chat/completions")][-1]
    assert sent["messages"][:3] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C"}]

    after_removal = api.conversations.items.delete(added.data[0].id,
                                                   conversation_id=conversation.id)
    assert after_removal.id == conversation.id
    assert added.data[0].id not in {i.id for i in api.conversations.items.list(conversation.id)}
    with pytest.raises(openai.NotFoundError):
        api.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)

    assert api.conversations.update(conversation.id, metadata={"b": "2"}).metadata == {"b": "2"}
    gone = raw(server, "DELETE", f"/v1/conversations/{conversation.id}")
    check(gone.json(), "DeletedConversationResource")
    with pytest.raises(openai.NotFoundError):
        api.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError) as missing:
        api.responses.create(model="gpt-4o-mini", input="x", conversation=conversation.id)
    assert missing.value.body["param"] == "conversation"  # type: ignore[index]


def test_conversations_belong_to_their_maker(server: GatewayServer) -> None:
    api = client(server)
    conversation = api.conversations.create(items=[
        {"type": "message", "role": "user", "content": "a secret"}])
    stranger = client(server, Admin(server.url).key()["key"])
    for call in (lambda: stranger.conversations.retrieve(conversation.id),
                 lambda: stranger.conversations.items.list(conversation.id),
                 lambda: stranger.conversations.delete(conversation.id),
                 lambda: stranger.responses.create(model="gpt-4o-mini", input="x",
                                                   conversation=conversation.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert len(api.conversations.items.list(conversation.id).data) == 1


def test_bad_conversation_requests_are_refused(server: GatewayServer) -> None:
    api = client(server)
    conversation = api.conversations.create()
    first = api.responses.create(model="gpt-4o-mini", input="x")
    for call, param in [
        (lambda: api.responses.create(model="gpt-4o-mini", input="x",
                                      conversation=conversation.id,
                                      previous_response_id=first.id), "conversation"),
        (lambda: api.conversations.create(items=[{"type": "message", "role": "user",
                                                  "content": str(i)} for i in range(21)]),
         "items"),
        (lambda: api.conversations.items.create(conversation.id, items=[
            {"type": "web_search_call", "id": "ws_1"}]), "items.0.type"),  # type: ignore[list-item]
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.body["param"] == param, refused.value.body  # type: ignore[index]
    assert api.conversations.items.list(conversation.id).data == []


def test_concurrent_turns_each_keep_their_items(server: GatewayServer) -> None:
    api = client(server)
    conversation = api.conversations.create()

    def turn(n: int) -> Any:
        return api.responses.create(model="gpt-4o-mini", input=f"turn {n}",
                                    conversation=conversation.id)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(turn, range(6)))
    items = api.conversations.items.list(conversation.id, limit=100, order="asc").data
    assert len(items) == 12 and len({i.id for i in items}) == 12
    inputs = sorted(i.content[0].text for i in items if i.role == "user")  # type: ignore[union-attr]
    assert inputs == [f"turn {n}" for n in range(6)]
    assert {r.output[0].id for r in responses} <= {i.id for i in items}

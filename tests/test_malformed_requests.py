"""Malformed requests get a 4xx in their API's error envelope, never a 500.

Valid chat and Messages requests (the random ones of test_translation_agreement) are
broken at random — a field, part or block replaced by a value of another type, removed, or
joined by an unknown one — and sent through a real gateway to each kind of model it
serves: the demo model, an OpenAI-compatible upstream and a Messages API upstream (the
translation both ways). Whatever the gateway cannot serve it must refuse with a 4xx in the
envelope of the API that was called (or answer, when the change was harmless): a 500 here
is a crash on client input.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from llmport.api.anthropic.validation import validate_messages
from llmport.api.openai.validation import validate_chat
from llmport.errors import InvalidRequestError
from llmport.translation.messages_to_openai import chat_request
from llmport.translation.openai_to_messages import messages_request
from tests.conftest import MASTER_KEY, claude_config
from tests.support.admin import Admin, tenancy_config
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_openai import FakeOpenAI
from tests.support.servers import GatewayServer
from tests.test_translation_agreement import random_chat_request, random_messages_request

VALUES: tuple[Any, ...] = (None, True, 0, -1, 1.5, 10**12, "", "x", [], [None], {},
                           {"type": None}, {"type": "text"}, [{"type": "bogus"}], [[1]],
                           {"function": 1}, {"url": 3})


def places(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``node`` (its fields, items, and theirs)."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from places(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from places(value, (*path, index))


def broken(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """``body`` with one to three random changes."""
    body = copy.deepcopy(body)
    paths = [path for path in places(body) if path and path[0] not in ("model", "stream")]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        parent: Any = body
        try:
            for key in path[:-1]:
                parent = parent[key]
            roll = rng.random()
            if roll < 0.6:
                parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
            elif isinstance(parent, dict) and roll < 0.8:
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent["x_unknown"] = copy.deepcopy(rng.choice(VALUES))
        except (KeyError, IndexError, TypeError):  # an earlier change removed the way there
            pass
    return body


@pytest.fixture
def gateway(fake: FakeOpenAI, claude_upstream: FakeAnthropic,
            start_gateway: Callable[[dict[str, Any]], GatewayServer]) -> GatewayServer:
    config = claude_config(claude_upstream)
    config["models"] += [
        {"name": "gpt-4o-mini", "provider": "openai", "model": "fake-model",
         "api_base": fake.url, "api_key": "sk-upstream"},
        {"name": "demo", "provider": "demo", "first_token_ms": 0, "token_delay_ms": 0}]
    return start_gateway(config)


def send_broken(gateway: GatewayServer, seed: int, rounds: int,
                makers: dict[str, Callable[[random.Random], dict[str, Any]]],
                models: tuple[str, ...] = ("claude", "gpt-4o-mini", "demo")) -> dict[int, int]:
    """``rounds`` broken requests to each path (to a random one of ``models``), every answer
    < 500 and every refusal in the envelope of its API; the count of each status."""
    rng = random.Random(seed)
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=gateway.url, timeout=30,
                      headers={"authorization": f"Bearer {MASTER_KEY}"}) as http:
        for _ in range(rounds):
            for path, make in makers.items():
                body = broken(make(rng), rng)
                body["model"] = rng.choice(models)
                if "count_tokens" not in path and "embeddings" not in path:
                    body["stream"] = rng.random() < 0.3
                response = http.post(path, json=body)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code < 500, (path, body, response.text)
                if response.status_code >= 400:
                    error = response.json()
                    if path.startswith("/v1/messages"):
                        assert error["type"] == "error" and error["error"]["type"], error
                    else:
                        assert isinstance(error["error"]["message"], str), error
    return statuses


def test_malformed_requests_are_refused_in_their_envelope(gateway: GatewayServer) -> None:
    statuses = send_broken(gateway, 7, 300, {
        "/v1/chat/completions": lambda rng: random_chat_request(rng.randrange(300)),
        "/v1/messages": lambda rng: random_messages_request(rng.randrange(300))})
    assert statuses.get(400, 0) > 100 and statuses.get(200, 0) > 100, statuses


def completions_request(rng: random.Random) -> dict[str, Any]:
    return {"model": "demo", "prompt": rng.choice(["Hi", ["a", "b"], [1, 2], [[1, 2]]]),
            "max_tokens": 5, "stop": ["x"], "n": 1, "logprobs": 1, "echo": False,
            "suffix": "", "temperature": 0.5}


def embeddings_request(rng: random.Random) -> dict[str, Any]:
    return {"model": "demo", "input": rng.choice(["a", ["a", "b"], [1, 2], [[1, 2]]]),
            "encoding_format": rng.choice(["float", "base64"]), "dimensions": 8, "user": "u"}


def count_tokens_request(rng: random.Random) -> dict[str, Any]:
    body = random_messages_request(rng.randrange(300))
    body.pop("max_tokens")
    body.pop("stream", None)
    return body


def test_malformed_requests_to_the_other_endpoints_are_refused(gateway: GatewayServer) -> None:
    statuses = send_broken(gateway, 5, 150, {"/v1/completions": completions_request,
                                             "/v1/embeddings": embeddings_request,
                                             "/v1/messages/count_tokens": count_tokens_request})
    assert statuses.get(400, 0) > 100 and statuses.get(200, 0) > 50, statuses  # both paths


def test_malformed_bodies_are_refused_by_the_validators_and_translations() -> None:
    """The same at the functions, many more times: a validator passes a body or refuses it
    with ``InvalidRequestError``; a translation of a body its validator passed returns a
    request or refuses it the same way — never another exception (a 500)."""
    rng = random.Random(11)
    for seed in range(3000):
        chat = broken(random_chat_request(seed % 300), rng)
        with contextlib.suppress(InvalidRequestError):
            validate_chat(chat)
            messages_request(chat, model="claude-x", default_max_tokens=100)
        messages = broken(random_messages_request(seed % 300), rng)
        with contextlib.suppress(InvalidRequestError):
            validate_messages(messages)
            chat_request(messages)


CLAUDE = "claude"


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"model": "demo", "messages": [{"role": {}, "content": "x"}]},
     "messages[0].role"),
    ("/v1/messages", {"model": "demo", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": ["text"], "text": "x"}]}]},
     "messages.0.content.0.type"),
    ("/v1/messages", {"model": CLAUDE, "max_tokens": 5, "output_config": 3,
                      "messages": [{"role": "user", "content": "x"}]}, "output_config"),
    ("/v1/chat/completions", {"model": CLAUDE, "tool_choice": 1.5, "messages": [
        {"role": "user", "content": "x"}]}, "tool_choice"),
    ("/v1/chat/completions", {"model": CLAUDE, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "y", "tool_calls": True}]}, "messages[1].tool_calls"),
    ("/v1/chat/completions", {"model": CLAUDE, "messages": [
        {"role": "system", "content": "Only a system prompt."}]}, "messages"),
    ("/v1/embeddings", {"model": "gpt-4o-mini", "input": "x", "dimensions": 10**12},
     "dimensions"),
    ("/v1/embeddings", {"model": "demo", "input": "x", "dimensions": 10_000}, "dimensions"),
    ("/v1/embeddings", {"model": "demo", "input": ["x"] * 2049}, "input"),
    ("/v1/completions", {"model": "demo", "prompt": [[[1]]]}, "prompt"),
], ids=["role-object", "block-type-list", "output-config-number", "tool-choice-number",
        "tool-calls-boolean", "no-turn-for-messages", "dimensions-huge", "dimensions-demo",
        "inputs-too-many", "prompt-too-deep"])
def test_each_crash_the_fuzzing_found_is_a_400(gateway: GatewayServer, path: str,
                                                body: dict[str, Any], param: str) -> None:
    response = httpx.post(gateway.url + path, json=body,
                          headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param if path != "/v1/messages" else param in error["message"]


def test_the_demo_answers_a_schema_it_cannot_read(gateway: GatewayServer) -> None:
    """The demo model makes an example of the schema it is given; one it cannot read (here
    properties that are not an object, tools without a name) it answers anyway."""
    response = httpx.post(gateway.url + "/v1/chat/completions", headers={
        "authorization": f"Bearer {MASTER_KEY}"}, json={
        "model": "demo", "messages": [{"role": "user", "content": "Use lookup"}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "properties": "x", "enum": 5}}},
        "tools": [{"type": "function", "function": {"name": ["lookup"]}}]})
    assert response.status_code == 200, response.text
    assert orjson.loads(response.json()["choices"][0]["message"]["content"]) == {}


def test_the_demo_completes_a_prompt_of_token_ids(gateway: GatewayServer) -> None:
    response = httpx.post(gateway.url + "/v1/completions", headers={
        "authorization": f"Bearer {MASTER_KEY}"}, json={"model": "demo", "prompt": [[1, 2], 3]})
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["text"]


# -- the admin API ------------------------------------------------------------------------------

@pytest.fixture
def tenancy(start_gateway: Callable[[dict[str, Any]], GatewayServer]) -> GatewayServer:
    return start_gateway(tenancy_config())


def test_malformed_admin_requests_are_refused(tenancy: GatewayServer) -> None:
    admin = Admin(tenancy.url)
    org = admin.call("POST", "/admin/orgs", 201, json={"name": "o"})
    team = admin.call("POST", "/admin/teams", 201, json={"name": "t", "org_id": org["id"]})
    key = {"name": "k", "org_id": org["id"], "team_id": team["id"], "rpm_limit": 10,
           "tpm_limit": 1000, "max_parallel_requests": 2, "max_budget": 1.0,
           "budget_period": "monthly", "models": ["demo"], "metadata": {"a": 1},
           "expires_at": "2030-01-01T00:00:00Z", "scopes": ["admin"],
           "model_limits": {"demo": {"rpm_limit": 5}}, "priority": 3}
    rng = random.Random(3)

    def sent(method: str, path: str, body: Any) -> int:
        with httpx.Client(base_url=tenancy.url, timeout=30,
                          headers={"authorization": f"Bearer {MASTER_KEY}"}) as http:
            response = http.request(method, path, json=body)
        assert response.status_code < 500, (method, path, body, response.text)
        assert response.status_code < 300 or isinstance(response.json()["error"]["message"],
                                                        str), response.text
        return response.status_code

    for _ in range(120):
        created = httpx.post(tenancy.url + "/admin/keys", json=broken(key, rng),
                             headers={"authorization": f"Bearer {MASTER_KEY}"})
        assert created.status_code < 500, created.text
        if created.status_code == 201:
            path = f"/admin/keys/{created.json()['id']}"
            sent("PATCH", path, broken(key, rng))
            sent("POST", path + "/rotate", broken({"grace_seconds": 5}, rng))
        for kind, body in (("orgs", {"name": "o", "max_budget": 2.0}),
                           ("teams", {"name": "t", "org_id": org["id"]}),
                           ("users", {"name": "u", "email": "e@x", "org_id": org["id"]})):
            sent("POST", f"/admin/{kind}", broken(body, rng))


@pytest.mark.parametrize(("method", "path", "body", "status", "param"), [
    ("GET", "/admin/spend/logs?offset=100000000000000000000", None, 400, "offset"),
    ("GET", "/admin/keys?offset=100000000000000000000", None, 400, "offset"),
    ("GET", "/admin/usage?start=9999-12-31T23:59:59-14:00", None, 400, "start"),
    ("POST", "/admin/keys", {"expires_at": "0001-01-01T00:00:00+14:00"}, 400, "expires_at"),
    ("POST", "/admin/users", {"email": "taken@example.com"}, 409, None),
], ids=["logs-offset", "keys-offset", "usage-start-year-10000", "expiry-year-0",
        "email-taken"])
def test_each_admin_crash_the_fuzzing_found_is_refused(
        tenancy: GatewayServer, method: str, path: str, body: Any, status: int,
        param: str | None) -> None:
    admin = Admin(tenancy.url)
    admin.call("POST", "/admin/users", 201, json={"email": "taken@example.com"})
    response = admin.http.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


def test_a_key_rotation_grace_is_bounded(tenancy: GatewayServer) -> None:
    admin = Admin(tenancy.url)
    key = admin.key(name="k")
    admin.call("POST", f"/admin/keys/{key['id']}/rotate", 400, json={"grace_seconds": 1e12})
    admin.call("POST", f"/admin/keys/{key['id']}/rotate", 201, json={"grace_seconds": 86_400})


def test_an_admin_bug_still_answers_in_the_envelope(tenancy: GatewayServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever escapes an admin route is a 500 in the OpenAI envelope, not a dropped
    connection or a plain-text page."""
    db = tenancy.app.gateway.db
    assert db is not None

    async def broken_list(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(db, "list", broken_list)
    response = httpx.get(tenancy.url + "/admin/orgs",
                         headers={"authorization": f"Bearer {MASTER_KEY}"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"

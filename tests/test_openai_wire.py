"""The OpenAI surface through llmport, checked against the official OpenAPI schemas.

Raw HTTP (httpx) sees the exact bytes; the official client must parse them too.
Both the demo model and an OpenAI-compatible upstream are covered.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

import llmport
from tests.conftest import MASTER_KEY
from tests.support import spec
from tests.support.fake_openai import FakeOpenAI
from tests.support.servers import GatewayServer

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def sse_events(text: str) -> list[str]:
    """The data fields of an SSE body, checking the framing is exactly `data: …\\n\\n`."""
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events[:3]
    return [e[len("data: "):] for e in events]


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is the weather?"}]}],
        **extra}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "demo"])
@pytest.mark.parametrize("extra", [
    {},
    {"n": 2, "logprobs": True, "top_logprobs": 0},
    {"tools": TOOLS, "tool_choice": "required"},
    {"max_tokens": 2},
    {"response_format": {"type": "json_object"}},
])
def test_chat_bodies_match_the_spec(proxied: GatewayServer, model: str,
                                    extra: dict[str, Any]) -> None:
    response = httpx.post(proxied.url + "/v1/chat/completions", headers=AUTH,
                          json=chat_body(model, **extra))
    assert response.status_code == 200, response.text
    body = response.json()
    spec.check(body, "CreateChatCompletionResponse")
    assert len(body["choices"]) == extra.get("n", 1)
    if "tools" in extra:
        assert body["choices"][0]["finish_reason"] == "tool_calls"
    if "max_tokens" in extra:
        assert body["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("model", ["gpt-4o-mini", "demo"])
@pytest.mark.parametrize("include_usage", [True, False])
@pytest.mark.parametrize("extra", [{}, {"tools": TOOLS, "tool_choice": "required"}, {"n": 2}])
def test_chat_streams_match_the_spec(proxied: GatewayServer, model: str, include_usage: bool,
                                     extra: dict[str, Any]) -> None:
    body = chat_body(model, stream=True, **extra)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response = httpx.post(proxied.url + "/v1/chat/completions", headers=AUTH, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    for chunk in chunks:
        spec.check(chunk, "CreateChatCompletionStreamResponse")
    assert len({c["id"] for c in chunks}) == 1
    with_choices = [c for c in chunks if c["choices"]]
    assert with_choices[-1]["choices"][0]["finish_reason"] in ("stop", "tool_calls")
    assert all(ch["finish_reason"] is None for c in with_choices[:-1] for ch in c["choices"])
    usage_chunks = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1]
        assert usage_chunks[0]["usage"]["completion_tokens"] > 0
    else:
        assert usage_chunks == []
        assert all(c.get("usage") is None for c in chunks)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "demo"])
def test_completions_and_embeddings_match_the_spec(proxied: GatewayServer, model: str) -> None:
    completion = httpx.post(proxied.url + "/v1/completions", headers=AUTH,
                            json={"model": model, "prompt": "Once upon", "max_tokens": 3})
    spec.check(completion.json(), "CreateCompletionResponse")
    stream = httpx.post(proxied.url + "/v1/completions", headers=AUTH,
                        json={"model": model, "prompt": "Once upon", "stream": True})
    events = sse_events(stream.text)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    for chunk in chunks:
        # The spec reuses the non-streamed schema for streamed chunks, whose finish_reason
        # cannot be null; OpenAI sends null until the last chunk, and so do we.
        if chunk is not chunks[-1]:
            assert chunk["choices"][0]["finish_reason"] is None
            chunk["choices"][0]["finish_reason"] = "stop"
        spec.check(chunk, "CreateCompletionResponse")
    embedding = httpx.post(proxied.url + "/v1/embeddings", headers=AUTH,
                           json={"model": model, "input": ["a", "b"]})
    spec.check(embedding.json(), "CreateEmbeddingResponse")
    assert len(embedding.json()["data"]) == 2


def test_models_match_the_spec(proxied: GatewayServer) -> None:
    listing = httpx.get(proxied.url + "/v1/models", headers=AUTH).json()
    spec.check(listing, "ListModelsResponse")
    assert [m["id"] for m in listing["data"]] == ["gpt-4o-mini", "demo"]
    spec.check(httpx.get(proxied.url + "/v1/models/demo", headers=AUTH).json(), "Model")


def test_parameters_reach_the_upstream_unchanged(proxied: GatewayServer,
                                                 fake: FakeOpenAI) -> None:
    body = chat_body("gpt-4o-mini", n=2, stop=["\n\n", "END"], max_completion_tokens=50,
                     temperature=0.3, top_p=0.9, tools=TOOLS, tool_choice="auto",
                     response_format={"type": "json_object"}, logprobs=True, top_logprobs=2,
                     seed=7, user="user-42", parallel_tool_calls=False, top_k=5)
    raw = orjson.dumps(body)
    response = httpx.post(proxied.url + "/v1/chat/completions", content=raw,
                          headers={**AUTH, "x-request-id": "client-req-1",
                                   "content-type": "application/json"})
    assert response.status_code == 200
    forwarded = fake.history[-1]
    assert forwarded.body == {**body, "model": "fake-model"}  # the upstream's id
    assert forwarded.headers["Authorization"] == "Bearer sk-upstream-secret"
    assert forwarded.headers["x-request-id"] == "client-req-1"
    assert response.headers["x-request-id"] == "client-req-1"
    assert float(response.headers["x-llmport-overhead-ms"]) >= 0


def test_unchanged_bodies_are_forwarded_byte_for_byte(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = start_gateway({"models": [{"name": "same", "provider": "openai",
                                        "api_base": fake.url}]})
    raw = b'{"model":"same", "messages":[{"role":"user","content":"x"}],  "seed": 1}'
    response = httpx.post(server.url + "/v1/chat/completions", content=raw)
    assert response.status_code == 200
    assert fake.history[-1].body == orjson.loads(raw)
    assert "Authorization" not in fake.history[-1].headers  # no api_key configured


def test_the_upstream_sees_one_user_agent(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = start_gateway({"models": [
        {"name": "plain", "provider": "openai", "api_base": fake.url},
        {"name": "named", "provider": "openai", "api_base": fake.url,
         "headers": {"User-Agent": "team-proxy/2"}}]})
    for model in ("plain", "named"):
        response = httpx.post(server.url + "/v1/chat/completions",
                              json={"model": model, "messages": [{"role": "user", "content": "x"}]},
                              headers={"user-agent": "client/1"})
        assert response.status_code == 200
    plain, named = fake.history[-2].headers, fake.history[-1].headers
    assert plain.getall("User-Agent") == ["llmport/" + llmport.__version__]
    assert named.getall("User-Agent") == ["team-proxy/2"]  # the configured one, alone


def test_streams_ask_the_upstream_for_usage_and_hide_it(proxied: GatewayServer,
                                                        fake: FakeOpenAI) -> None:
    response = httpx.post(proxied.url + "/v1/chat/completions", headers=AUTH,
                          json=chat_body("gpt-4o-mini", stream=True))
    assert fake.history[-1].body["stream_options"] == {"include_usage": True}
    assert '"choices":[]' not in response.text
    assert response.headers["x-request-id"].startswith("req_")

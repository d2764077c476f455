"""``POST /v1/messages/count_tokens``: exact where a provider can count, a documented estimate else.

The demo model counts as it bills; the ``anthropic`` provider asks its
upstream's count endpoint (the strict fake checks the request's shape);
anything else gets the README's estimate.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import MASTER_KEY, claude_config
from tests.support.fake_anthropic import Count, Fail, FakeAnthropic
from tests.support.fake_openai import FakeOpenAI
from tests.support.servers import GatewayServer

PATH = "/v1/messages/count_tokens"
HEADERS = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
USER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


def count(server: GatewayServer, body: dict[str, Any],
          headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(server.url + PATH, json=body, headers=HEADERS if headers is None
                      else headers)


def error_type(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return str(body["error"]["type"])


@pytest.fixture
def claude_server(claude_upstream: FakeAnthropic, start_gateway: Any) -> GatewayServer:
    server: GatewayServer = start_gateway(claude_config(claude_upstream))
    return server


def test_exact_for_the_demo_model(proxied: GatewayServer) -> None:
    claude = anthropic.Anthropic(base_url=proxied.url, api_key=MASTER_KEY, max_retries=0)
    request: Any = {"model": "demo", "system": "Be brief.",
                    "messages": [{"role": "user", "content": "Count these words, please."}]}
    counted = claude.messages.count_tokens(**request)
    used = claude.messages.create(max_tokens=5, **request).usage.input_tokens
    assert counted.input_tokens == used
    response = count(proxied, request)
    assert response.headers["x-llmport-token-count"] == "exact"
    assert response.json() == {"input_tokens": used}


def test_an_estimate_otherwise(proxied: GatewayServer, fake: FakeOpenAI) -> None:
    # 40 characters of text → 10 tokens, + 3 for the one message, + 1,600 for the image.
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "x" * 40},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]}
    response = count(proxied, request)
    assert response.status_code == 200
    assert response.headers["x-llmport-token-count"] == "estimate"
    assert response.json() == {"input_tokens": 10 + 3 + 1600}
    assert fake.history == []  # counting never calls an upstream that cannot count


def test_the_messages_provider_asks_its_upstream(claude_server: GatewayServer,
                                                 claude_upstream: FakeAnthropic) -> None:
    claude_upstream.enqueue(Count(tokens=1234))
    claude = anthropic.Anthropic(base_url=claude_server.url, api_key=MASTER_KEY, max_retries=0)
    counted = claude.messages.count_tokens(model="claude", system="Be brief.", messages=USER)
    assert counted.input_tokens == 1234
    sent = claude_upstream.history[-1]
    assert sent.path == PATH and sent.headers["x-api-key"] == "sk-ant-upstream"
    assert sent.body == {"model": "claude-sonnet-4-5", "messages": [
        {"role": "user", "content": [{"type": "text", "text": USER[0]["content"]}]}],
        "system": [{"type": "text", "text": "Be brief."}]}


def test_upstream_failures_are_reported_not_estimated(claude_server: GatewayServer,
                                                      claude_upstream: FakeAnthropic) -> None:
    claude_upstream.enqueue(Fail())
    assert error_type(count(claude_server, {"model": "claude", "messages": USER}),
                      529) == "overloaded_error"


def test_errors(proxied: GatewayServer) -> None:
    assert error_type(count(proxied, {"model": "nope", "messages": USER}), 404) == \
        "not_found_error"
    assert error_type(count(proxied, {"model": "demo"}), 400) == "invalid_request_error"
    assert error_type(count(proxied, {"model": "demo", "messages": USER}, headers={}),
                      401) == "authentication_error"

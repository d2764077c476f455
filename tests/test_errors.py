"""Every error: the right status, the OpenAI envelope, and the official client's exception."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY
from tests.support import spec
from tests.support.fake_openai import Fail, FakeOpenAI, Hang, Reset
from tests.support.servers import GatewayServer

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
USER: Any = [{"role": "user", "content": "hi"}]


def envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    spec.check(body, "ErrorResponse")
    return body["error"]


@pytest.mark.parametrize(("raw", "param", "code"), [
    (b"{not json", None, "invalid_json"),
    (b"[1, 2]", None, "invalid_json"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "missing_required_parameter"),
    (b'{"model": "demo"}', "messages", "missing_required_parameter"),
    (b'{"model": "demo", "messages": []}', "messages", "invalid_value"),
    (b'{"model": "demo", "messages": [{"role": "robot", "content": "x"}]}',
     "messages[0].role", "invalid_value"),
    (b'{"model": "demo", "messages": [{"role": "user"}]}', "messages[0].content",
     "missing_required_parameter"),
    (b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "temperature": 3}',
     "temperature", "invalid_value"),
    (b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "n": "2"}',
     "n", "invalid_type"),
    (b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
     "stream", "invalid_type"),
    (b'{"model": "demo", "messages": [{"role": "user", "content": "x"}],'
     b' "stream_options": {"include_usage": true}}', "stream_options", "invalid_value"),
])
def test_bad_requests_are_400_in_the_envelope(proxied: GatewayServer, raw: bytes,
                                              param: str | None, code: str,
                                              fake: FakeOpenAI) -> None:
    response = httpx.post(proxied.url + "/v1/chat/completions", content=raw, headers=AUTH)
    error = envelope(response, 400)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and error["code"] == code
    assert fake.history == []


def test_sdk_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="demo", messages=USER, temperature=5)
    assert info.value.status_code == 400 and info.value.param == "temperature"


def test_missing_and_wrong_keys_are_401(proxied: GatewayServer) -> None:
    body = {"model": "demo", "messages": USER}
    missing = envelope(httpx.post(proxied.url + "/v1/chat/completions", json=body), 401)
    assert missing["code"] == "missing_api_key"
    wrong = httpx.post(proxied.url + "/v1/chat/completions", json=body,
                       headers={"authorization": "Bearer sk-wrong"})
    assert envelope(wrong, 401)["code"] == "invalid_api_key"
    assert envelope(httpx.get(proxied.url + "/v1/models"), 401)
    bad = openai.OpenAI(base_url=proxied.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="demo", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_auth_is_checked_before_the_body_is_parsed(proxied: GatewayServer) -> None:
    response = httpx.post(proxied.url + "/v1/chat/completions", content=b"{garbage")
    envelope(response, 401)


def test_unknown_model_is_404_before_any_stream(client: openai.OpenAI, fake: FakeOpenAI,
                                                proxied: GatewayServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-5-nope", messages=USER, stream=True)
    assert info.value.code == "model_not_found"
    raw = httpx.post(proxied.url + "/v1/chat/completions", headers=AUTH,
                     json={"model": "gpt-5-nope", "messages": USER, "stream": True})
    assert envelope(raw, 404)["code"] == "model_not_found"
    assert fake.history == []


def test_unknown_route_and_method_use_the_envelope(proxied: GatewayServer) -> None:
    assert envelope(httpx.get(proxied.url + "/v1/nothing-here", headers=AUTH), 404)
    assert envelope(httpx.get(proxied.url + "/v1/chat/completions", headers=AUTH), 405)
    client = openai.OpenAI(base_url=proxied.url + "/v2", api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="demo", messages=USER)


@pytest.mark.parametrize(("status", "exception"), [
    (400, openai.BadRequestError),
    (403, openai.PermissionDeniedError),
    (404, openai.NotFoundError),
    (422, openai.UnprocessableEntityError),
    (429, openai.RateLimitError),
    (500, openai.InternalServerError),
    (503, openai.InternalServerError),
])
def test_upstream_errors_keep_status_and_message(client: openai.OpenAI, fake: FakeOpenAI,
                                                 status: int, exception: type[Exception]) -> None:
    # Enough failures for every retry the router may make on retryable statuses.
    fake.enqueue(*[Fail(status, f"upstream says {status}", "upstream_type", "upstream_code")] * 5)
    with pytest.raises(exception) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    error: Any = info.value
    assert error.status_code == status
    assert error.body["message"] == f"upstream says {status}"
    assert error.code == "upstream_code" and error.type == "upstream_type"
    retried = status in (429, 500, 503)  # never a 4xx request error
    assert len(fake.history) == (3 if retried else 1)


def test_upstream_timeout_is_504(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = start_gateway({"router": {"num_retries": 0}, "models": [
        {"name": "slow", "provider": "openai", "api_base": fake.url, "timeout": 0.3}]})
    fake.enqueue(Hang())
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="slow", messages=USER)
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"
    assert fake.wait_for(lambda: fake.history[-1].disconnected)  # the upstream call was dropped


def test_unreachable_upstream_is_502(start_gateway: Any) -> None:
    server = start_gateway({"router": {"num_retries": 0}, "models": [
        {"name": "gone", "provider": "openai", "api_base": "http://127.0.0.1:9/v1"}]})
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "gone", "messages": USER})
    assert envelope(response, 502)["code"] == "upstream_connection_error"


def test_connection_reset_is_502(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = start_gateway({"router": {"num_retries": 0}, "models": [
        {"name": "m", "provider": "openai", "api_base": fake.url}]})
    fake.enqueue(Reset())
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "m", "messages": USER, "stream": True})
    assert envelope(response, 502)["code"] == "upstream_connection_error"


def test_oversized_body_is_413(start_gateway: Any) -> None:
    server = start_gateway({"server": {"max_request_mb": 0.001},
                            "models": [{"name": "demo", "provider": "demo"}]})
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "demo", "messages": [{"role": "user",
                                                               "content": "x" * 5000}]})
    assert envelope(response, 413)["code"] == "request_too_large"


def test_openapi_docs_describe_the_proxy_routes(proxied: GatewayServer) -> None:
    document = httpx.get(proxied.url + "/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                 "/healthz", "/readyz"):
        assert path in document["paths"], path
    chat = document["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(chat["required"])
    assert httpx.get(proxied.url + "/docs").status_code == 200

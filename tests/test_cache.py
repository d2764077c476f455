"""The exact response cache: hits skip the upstream, streams replay, headers opt out."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.support.events import finished_events
from tests.support.fake_openai import Fail, FakeOpenAI

USER: Any = [{"role": "user", "content": "What is a gateway?"}]


def cached(fake: FakeOpenAI, start_gateway: Any, **cache: Any) -> Any:
    return start_gateway({"models": [{"name": "m", "provider": "openai", "api_base": fake.url}],
                          "cache": {"enabled": True, **cache}})


def test_identical_requests_hit_and_are_not_billed(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = cached(fake, start_gateway)
    finished = finished_events(server.gateway)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    first = client.chat.completions.with_raw_response.create(model="m", messages=USER, user="a")
    second = client.chat.completions.with_raw_response.create(model="m", messages=USER, user="b")
    assert "x-llmport-cache" not in first.headers
    assert second.headers["x-llmport-cache"] == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert len(fake.history) == 1
    finished.wait(2)
    assert finished[0].usage is not None and finished[0].usage.completion_tokens == 8
    assert finished[1].usage is not None and finished[1].usage.total_tokens == 0
    other = client.chat.completions.create(model="m", messages=USER, temperature=0.5)
    assert other.choices and len(fake.history) == 2  # a different request is a miss


def test_streams_are_replayed_as_streams(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = cached(fake, start_gateway)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)

    def text() -> str:
        return "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="m", messages=USER, stream=True) if c.choices)

    assert text() == text() == "Hello from the fake upstream , answering every"
    assert len(fake.history) == 1


def test_failures_and_broken_streams_are_not_cached(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = cached(fake, start_gateway)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    fake.enqueue(*[Fail(500)] * 3)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=USER)
    assert client.chat.completions.create(model="m", messages=USER).choices
    assert len(fake.history) == 4


def test_cache_control_headers(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = cached(fake, start_gateway)
    url, body = server.url + "/v1/chat/completions", {"model": "m", "messages": USER}
    httpx.post(url, json=body, headers={"cache-control": "no-store"})
    httpx.post(url, json=body)  # not stored before: a miss, now stored
    skipped = httpx.post(url, json=body, headers={"cache-control": "no-cache"})
    assert "x-llmport-cache" not in skipped.headers
    assert httpx.post(url, json=body).headers["x-llmport-cache"] == "hit"
    assert len(fake.history) == 3


def test_entries_expire(fake: FakeOpenAI, start_gateway: Any) -> None:
    import time

    server = cached(fake, start_gateway, ttl=0.2)
    url, body = server.url + "/v1/chat/completions", {"model": "m", "messages": USER}
    httpx.post(url, json=body)
    assert httpx.post(url, json=body).headers.get("x-llmport-cache") == "hit"
    time.sleep(0.3)
    assert "x-llmport-cache" not in httpx.post(url, json=body).headers
    assert len(fake.history) == 2


async def test_replicas_sharing_redis_share_the_cache(fake: FakeOpenAI, start_gateway: Any,
                                                      prefix: str) -> None:
    from tests.support.databases import REDIS_URL

    config = {"models": [{"name": "m", "provider": "openai", "api_base": fake.url}],
              "cache": {"enabled": True, "scope": "global"}, "redis_url": REDIS_URL,
              "redis_prefix": prefix}
    replicas = [start_gateway(config), start_gateway(config)]
    body = {"model": "m", "messages": USER}
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.post(f"{replicas[0].url}/v1/chat/completions", json=body)
        second = await http.post(f"{replicas[1].url}/v1/chat/completions", json=body)
        streamed = [await http.post(f"{replica.url}/v1/chat/completions",
                                    json={**body, "stream": True}) for replica in replicas]
    assert "x-llmport-cache" not in first.headers
    assert second.headers["x-llmport-cache"] == "hit"
    assert second.json() == first.json()
    assert "x-llmport-cache" not in streamed[0].headers
    assert streamed[1].headers["x-llmport-cache"] == "hit"
    assert streamed[1].text == streamed[0].text  # the same events, replayed by the other
    assert len(fake.history) == 2  # one upstream call for each distinct request
    assert type(replicas[0].gateway.policies[-1].store).__name__ == "StoreCache"


async def test_a_hit_is_a_copy_and_an_unreachable_store_is_a_miss() -> None:
    from llmport.gateway.context import CallContext
    from llmport.observability.events import EventBus
    from llmport.policies.cache import CacheConfig, CachePolicy, StoreCache
    from llmport.stores.memory import MemoryStore
    from llmport.types import Endpoint, JSONResult

    policy = CachePolicy(CacheConfig(enabled=True), EventBus(), MemoryStore())
    answers = iter([{"choices": [{"message": {"content": "first"}}]}])

    async def upstream(ctx: CallContext) -> JSONResult:
        return JSONResult(next(answers))

    def request() -> CallContext:
        return CallContext("r", Endpoint.CHAT, {"model": "m", "messages": USER}, None, "m")

    first = await policy(request(), upstream)
    first.data["choices"][0]["message"]["content"] = "changed by a policy outside"
    hit = await policy(request(), upstream)
    assert hit.data["choices"][0]["message"]["content"] == "first"
    hit.data["choices"].clear()
    assert (await policy(request(), upstream)).data["choices"]  # each hit its own copy

    class Unreachable(MemoryStore):
        async def get_value(self, key: str) -> bytes | None:
            raise ConnectionError("store down")

        async def set_value(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
            raise ConnectionError("store down")

    broken = StoreCache(Unreachable(), 10)
    assert await broken.get("k") is None
    await broken.put("k", b"{}")  # not kept, and no error

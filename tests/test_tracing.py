"""One trace per request, with the expected spans, and the upstream sees its span's context."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.fake_openai import Fail, FakeOpenAI

USER: Any = [{"role": "user", "content": "hi"}]
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"


def traced(fake: FakeOpenAI, start_gateway: Any) -> tuple[Any, InMemorySpanExporter]:
    server = start_gateway({
        "models": [{"name": "m", "provider": "openai", "model": "up-model",
                    "api_base": fake.url}],
        "router": {"backoff_base": 0.01},
        "cache": {"enabled": True},
        "observability": {"tracing": {"enabled": True, "exporter": "none"}}})
    memory = InMemorySpanExporter()
    server.app.observability.tracing.add_processor(SimpleSpanProcessor(memory))
    return server, memory


def spans_once_finished(memory: Any) -> Any:
    """The spans, once the request's root span has ended (just after the response)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        spans = memory.get_finished_spans()
        if any(s.name == "llmport.request" for s in spans):
            return spans
        time.sleep(0.005)
    raise AssertionError("the request span never ended")


def test_a_streamed_request_is_one_trace(fake: FakeOpenAI, start_gateway: Any) -> None:
    server, memory = traced(fake, start_gateway)
    fake.enqueue(Fail(503))  # one failed attempt, then a good one
    parent = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                           default_headers={"traceparent": parent})
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None
    spans = {s.name: s for s in spans_once_finished(memory)}
    attempts = [s for s in memory.get_finished_spans() if s.name == "llmport.upstream"]
    assert set(spans) == {"llmport.request", "llmport.auth", "llmport.policy.idempotency",
                          "llmport.policy.limits", "llmport.policy.cache",
                          "llmport.upstream", "llmport.stream"}
    assert {format(s.context.trace_id, "032x") for s in memory.get_finished_spans()} == {
        CLIENT_TRACE}  # one trace, the client's
    root = spans["llmport.request"]
    assert format(root.parent.span_id, "016x") == "b7ad6b7169203331"
    assert all(s.parent.span_id == root.context.span_id for s in memory.get_finished_spans()
               if s is not root)
    assert len(attempts) == 2
    failed, ok = sorted(attempts, key=lambda s: s.attributes["llmport.attempt"])
    assert failed.attributes["error.type"] == "UpstreamStatusError"
    assert ok.attributes["gen_ai.request.model"] == "up-model"
    assert ok.attributes["gen_ai.provider.name"] == "openai"
    assert ok.attributes["gen_ai.operation.name"] == "chat"
    stream = spans["llmport.stream"]
    assert stream.attributes["gen_ai.usage.output_tokens"] == 8
    assert stream.attributes["gen_ai.usage.input_tokens"] == 11
    assert list(stream.attributes["gen_ai.response.finish_reasons"]) == ["stop"]
    # Each attempt carried its own span's context upstream, not the client's.
    for recorded, span in zip(fake.history, [failed, ok], strict=True):
        sent = recorded.headers["traceparent"]
        assert sent == f"00-{CLIENT_TRACE}-{span.context.span_id:016x}-01"


def test_a_trace_starts_without_a_client_parent(fake: FakeOpenAI, start_gateway: Any) -> None:
    server, memory = traced(fake, start_gateway)
    response = httpx.post(server.url + "/v1/chat/completions", json={"model": "m",
                                                                    "messages": USER})
    assert response.status_code == 200
    root = next(s for s in spans_once_finished(memory) if s.name == "llmport.request")
    assert root.parent is None
    trace_id = f"{root.context.trace_id:032x}"
    assert fake.history[-1].headers["traceparent"].split("-")[1] == trace_id


def test_tracing_off_forwards_the_client_traceparent_untouched(fake: FakeOpenAI,
                                                               start_gateway: Any) -> None:
    server = start_gateway({"models": [{"name": "m", "provider": "openai",
                                        "api_base": fake.url}]})
    parent = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"
    httpx.post(server.url + "/v1/chat/completions", json={"model": "m", "messages": USER},
               headers={"traceparent": parent})
    assert fake.history[-1].headers["traceparent"] == parent
    assert server.app.observability.tracing is None

"""One trace per request, with the expected spans, and the upstream sees its span's context."""

from __future__ import annotations

import http.server
import threading
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
    sent_at = time.time_ns()
    response = httpx.post(server.url + "/v1/chat/completions", json={"model": "m",
                                                                    "messages": USER})
    answered_at = time.time_ns()
    assert response.status_code == 200
    root = next(s for s in spans_once_finished(memory) if s.name == "llmport.request")
    assert root.parent is None
    # The spans are built off the request path, after the answer: they still end when the
    # request did (before its answer arrived), not when they were built.
    assert sent_at <= root.start_time < root.end_time <= answered_at
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


class Collector:
    """An in-process OTLP/HTTP collector: keeps every span it is sent (protobuf, decoded)."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    collector.resources.append({a.key: a.value.string_value for a in
                                                resource_spans.resource.attributes})
                    for scope_spans in resource_spans.scope_spans:
                        collector.spans.extend(scope_spans.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_spans_reach_an_otlp_collector_by_the_standard_environment(
        fake: FakeOpenAI, start_gateway: Any, monkeypatch: Any) -> None:
    collector = Collector()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    try:
        server = start_gateway({
            "models": [{"name": "m", "provider": "openai", "model": "up-model",
                        "api_base": fake.url}],
            "observability": {"tracing": {"enabled": True, "service_name": "gw-under-test"}}})
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        client.chat.completions.create(model="m", messages=USER)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                s.name == "llmport.request" for s in collector.spans):
            time.sleep(0.02)
        names = {s.name for s in collector.spans}
        assert {"llmport.request", "llmport.auth", "llmport.upstream"} <= names
        assert len({s.trace_id for s in collector.spans}) == 1
        upstream = next(s for s in collector.spans if s.name == "llmport.upstream")
        attributes = {a.key: a.value for a in upstream.attributes}
        assert attributes["gen_ai.request.model"].string_value == "up-model"
        assert upstream.end_time_unix_nano >= upstream.start_time_unix_nano > 0
        sent = fake.history[-1].headers["traceparent"]
        assert sent == f"00-{upstream.trace_id.hex()}-{upstream.span_id.hex()}-01"
        assert collector.resources[0]["service.name"] == "gw-under-test"
        assert collector.resources[0]["deployment.environment"] == "test"
    finally:
        collector.close()


def test_an_unsampled_request_records_nothing_but_still_propagates(
        fake: FakeOpenAI, start_gateway: Any) -> None:
    server = start_gateway({
        "models": [{"name": "m", "provider": "openai", "api_base": fake.url}],
        "observability": {"tracing": {"enabled": True, "exporter": "none",
                                      "sample_ratio": 0.0}}})
    memory = InMemorySpanExporter()
    server.app.observability.tracing.add_processor(SimpleSpanProcessor(memory))
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "m", "messages": USER})
    assert response.status_code == 200
    version, trace_id, span_id, flags = fake.history[-1].headers["traceparent"].split("-")
    assert (version, flags, len(trace_id), len(span_id)) == ("00", "00", 32, 16)
    # The client asked for this trace to be sampled: its decision wins over the ratio.
    parent = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"
    httpx.post(server.url + "/v1/chat/completions", json={"model": "m", "messages": USER},
               headers={"traceparent": parent})
    root = next(s for s in spans_once_finished(memory) if s.name == "llmport.request")
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE
    assert all(format(s.context.trace_id, "032x") == CLIENT_TRACE
               for s in memory.get_finished_spans())  # the unsampled request left no span


def test_repeated_tracestate_fields_are_one_list_sent_upstream(fake: FakeOpenAI,
                                                               start_gateway: Any) -> None:
    server, memory = traced(fake, start_gateway)
    parent = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "m", "messages": USER},
                          headers=[("traceparent", parent), ("tracestate", "rojo=00f067aa0ba902b7"),
                                   ("tracestate", "congo=t61rcWkgMzE")])
    assert response.status_code == 200
    root = next(s for s in spans_once_finished(memory) if s.name == "llmport.request")
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE
    # Both fields, in the order they came, as one list (W3C: combined per RFC 7230).
    assert list(root.context.trace_state.items()) == [("rojo", "00f067aa0ba902b7"),
                                                      ("congo", "t61rcWkgMzE")]
    sent = fake.history[-1].headers
    assert sent.getall("tracestate") == ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]
    assert sent["traceparent"].split("-")[1] == CLIENT_TRACE


def test_a_repeated_traceparent_restarts_the_trace(fake: FakeOpenAI,
                                                   start_gateway: Any) -> None:
    server, memory = traced(fake, start_gateway)
    other = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "m", "messages": USER},
                          headers=[("traceparent", f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"),
                                   ("traceparent", f"00-{other}-00f067aa0ba902b7-01"),
                                   ("tracestate", "congo=t61rcWkgMzE")])
    assert response.status_code == 200
    root = next(s for s in spans_once_finished(memory) if s.name == "llmport.request")
    # Neither claimed parent is trusted: a new trace, and the client's tracestate is not
    # carried (W3C: no tracestate without a valid traceparent).
    assert root.parent is None
    trace_id = format(root.context.trace_id, "032x")
    assert trace_id not in (CLIENT_TRACE, other)
    sent = fake.history[-1].headers
    assert sent["traceparent"].split("-")[1] == trace_id
    assert "tracestate" not in sent


def test_sampling_follows_the_sdks_trace_id_ratio_rule() -> None:
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    from llmport.gateway.context import CallContext
    from llmport.observability.settings import TracingConfig
    from llmport.observability.tracing import Tracing
    from llmport.types import Endpoint

    tracing = Tracing(TracingConfig(enabled=True, exporter="none", sample_ratio=0.5))
    sdk = TraceIdRatioBased(0.5)
    decisions = []
    for _ in range(400):
        ctx = CallContext("r", Endpoint.CHAT, {}, None, "m")
        request = tracing._trace(ctx)
        assert ctx.trace_id is not None and len(ctx.trace_id) == 32
        expected = sdk.should_sample(None, int(ctx.trace_id, 16), "x").decision
        assert request.sampled is expected.is_sampled()
        decisions.append(request.sampled)
    assert 100 < sum(decisions) < 300  # both outcomes occur: the rule was really exercised


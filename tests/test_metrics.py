"""/metrics after a scripted mix of outcomes: exactly those counts, with one worker or two."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_openai import Answer, Fail, FakeOpenAI, Hang
from tests.test_cli_serve import free_port, wait_listening

USER: Any = [{"role": "user", "content": "hi"}]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, ls), v in values.items()
               if n == name and all((k, want) in ls for k, want in labels.items()))


def gateway_config(fake: FakeOpenAI) -> dict[str, Any]:
    return {"models": [
        {"name": "m", "provider": "openai", "api_base": fake.url, "max_concurrency": 1,
         "queue_size": 0},
        {"name": "demo", "provider": "demo", "first_token_ms": 0, "token_delay_ms": 0}],
        "router": {"num_retries": 0, "circuit_breaker": {"failure_threshold": 100}},
        "cache": {"enabled": True}}


class Script:
    """Sends a known mix and remembers what each response said happened."""

    def __init__(self, base: str, fake: FakeOpenAI) -> None:
        self.base, self.fake = base, fake
        self.statuses: collections.Counter[int] = collections.Counter()
        self.hits = self.misses = self.upstream_ok = self.streams = 0

    def post(self, content: str, **extra: Any) -> httpx.Response:
        body = {"model": "m", "messages": [{"role": "user", "content": content}], **extra}
        response = httpx.post(self.base + "/v1/chat/completions", json=body, timeout=30)
        self.statuses[response.status_code] += 1
        if response.headers.get("x-llmport-cache") == "hit":
            self.hits += 1
        else:
            self.misses += 1
            self.upstream_ok += response.status_code == 200
        return response

    def run(self) -> None:
        """Successes (one streamed), 2 upstream errors, 2+ cache hits, 1 queue rejection."""
        for i in range(2):
            assert self.post(f"q{i}").status_code == 200
        assert self.post("s", stream=True).status_code == 200
        self.streams += 1
        self.fake.enqueue(Fail(500), Fail(503))
        assert [self.post(f"e{i}").status_code for i in range(2)] == [500, 503]
        while self.hits < 2:  # with several workers a repeat may land on a cold cache
            assert self.post("q0").status_code == 200
        self.fake.default = Answer(ttft=2.0)
        slow = threading.Thread(target=self.post, args=("slow",))
        slow.start()
        time.sleep(0.3)
        self.fake.default = Answer()
        # Queues are per worker: with several, a request may land on an idle one.
        for attempt in range(20):
            if self.post(f"busy{attempt}").status_code == 429:
                break
        slow.join()
        self.misses -= 1  # the rejected request was looked up but never reached an upstream


def check_counts(values: dict[tuple[str, tuple[tuple[str, str], ...]], float],
                 script: Script) -> None:
    requests = "llmport_requests_total"
    for status, count in script.statuses.items():
        assert total(values, requests, model="m", status=str(status)) == count, status
    answered = sum(script.statuses.values())
    assert total(values, requests) == answered
    assert total(values, "llmport_cache_lookups_total", result="hit") == script.hits
    assert total(values, "llmport_cache_lookups_total", result="miss") == script.misses + 1
    assert total(values, "llmport_upstream_attempts_total", outcome="ok") == script.upstream_ok
    assert total(values, "llmport_upstream_attempts_total", outcome="UpstreamStatusError") == 2
    assert total(values, "llmport_queue_rejections_total") == 1
    assert total(values, "llmport_request_duration_seconds_count") == answered
    assert total(values, "llmport_time_to_first_token_seconds_count") == script.streams
    assert total(values, "llmport_tokens_total", kind="completion") == 8 * script.upstream_ok
    assert total(values, "llmport_in_flight_requests") == 0


def test_metrics_count_exactly_what_happened(fake: FakeOpenAI, start_gateway: Any) -> None:
    server = start_gateway(gateway_config(fake))
    script = Script(server.url, fake)
    script.run()
    assert script.hits == 2 and script.statuses == {200: 6, 500: 1, 503: 1, 429: 1}
    values = samples(httpx.get(server.url + "/metrics").text)
    check_counts(values, script)
    buckets = {dict(ls)["le"] for (n, ls) in values if n ==
               "llmport_request_duration_seconds_bucket"}
    assert {"0.001", "60.0"} <= buckets  # resolves 1 ms to 60 s


def test_a_scrape_counts_every_request_answered_before_it(fake: FakeOpenAI,
                                                          start_gateway: Any) -> None:
    """The metrics take finished requests in batches, off the request path: a scrape hands
    them the pending batch first, so a request answered just before it is never missing."""
    server = start_gateway(gateway_config(fake))
    server.app.gateway.events.DELAY = 3600  # no timed drain during the test: only the scrape's
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "m", "messages": USER}, timeout=30)
    assert response.status_code == 200
    values = samples(httpx.get(server.url + "/metrics").text)
    assert total(values, "llmport_requests_total", status="200") == 1
    assert total(values, "llmport_upstream_attempts_total", outcome="ok") == 1
    assert total(values, "llmport_request_duration_seconds_count") == 1


def test_metrics_can_require_the_master_key(fake: FakeOpenAI, start_gateway: Any) -> None:
    config = {**gateway_config(fake), "auth": {"master_key": "sk-metrics-master"},
              "observability": {"metrics": {"require_auth": True}}}
    server = start_gateway(config)
    assert httpx.get(server.url + "/metrics").status_code == 401
    scrape = httpx.get(server.url + "/metrics",
                       headers={"authorization": "Bearer sk-metrics-master"})
    assert scrape.status_code == 200 and "llmport_requests_total" in scrape.text


def test_a_separate_metrics_port_shows_live_state(fake: FakeOpenAI, start_gateway: Any) -> None:
    """Gauges of live state (requests in flight, queues) are refreshed for the metrics port's
    scrapes too, which read the registry from prometheus_client's own server thread."""
    port = free_port()
    server = start_gateway({**gateway_config(fake),
                            "observability": {"metrics": {"port": port}}})
    fake.enqueue(Hang(3.0))  # in flight for three seconds
    body = {"model": "m", "messages": USER}
    slow = threading.Thread(target=httpx.post, args=(server.url + "/v1/chat/completions",),
                            kwargs={"json": body, "timeout": 30})
    slow.start()
    assert httpx.get(server.url + "/metrics").status_code == 404  # not on the API port

    def in_flight() -> float:
        values = samples(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        return total(values, "llmport_in_flight_requests")

    deadline = time.monotonic() + 2.5
    while in_flight() != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight() == 1
    slow.join()
    deadline = time.monotonic() + 5
    while in_flight() != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight() == 0


@pytest.mark.slow
def test_two_workers_add_up(fake: FakeOpenAI, tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**gateway_config(fake),
                                      "logging": {"access_log": False}}))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llmport", "serve", "--config", str(config), "--port", str(port),
         "--workers", "2"], stderr=subprocess.PIPE, text=True,
        env={**os.environ, "LLMPORT_MASTER_KEY": ""})
    try:
        wait_listening(port, process)
        base = f"http://127.0.0.1:{port}"
        for _ in range(40):  # make sure both workers are up and serving
            httpx.get(base + "/healthz")
        script = Script(base, fake)
        script.run()
        time.sleep(1.5)  # live-state gauges of the other worker are refreshed every second
        # Each scrape lands on either worker; each must show the sum over both.
        for _ in range(6):
            check_counts(samples(httpx.get(base + "/metrics").text), script)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)

"""Structured logs of a real process: JSON, one request id throughout, never the key."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.fake_openai import FakeOpenAI
from tests.test_cli_serve import free_port, wait_listening

KEY = "sk-live-secret-key-0123456789"


def run(tmp_path: Path, fake: FakeOpenAI, **logging: Any) -> tuple[int, subprocess.Popen[str]]:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "auth": {"master_key": KEY},
        "logging": {"format": "json", **logging},
        "models": [{"name": "m", "provider": "openai", "api_base": fake.url,
                    "api_key": "sk-upstream-secret-999"}]}))
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "llmport", "serve", "--config",
                                str(config), "--port", str(port)],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "LLMPORT_MASTER_KEY": ""})
    wait_listening(port, process)
    return port, process


def json_lines(process: subprocess.Popen[str]) -> list[dict[str, Any]]:
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    lines = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_request_logs_are_json_with_the_request_id_and_no_key(tmp_path: Path,
                                                              fake: FakeOpenAI) -> None:
    port, process = run(tmp_path, fake)
    base = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {KEY}", "x-request-id": "trace-me-42"}
    ok = httpx.post(base + "/v1/chat/completions", headers=headers,
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    missing = httpx.post(base + "/v1/chat/completions", headers={**headers,
                         "x-request-id": "trace-me-43"}, json={"model": "nope", "messages": []})
    assert (ok.status_code, missing.status_code) == (200, 400)
    lines = json_lines(process)
    mine = [line for line in lines if "trace-me" in json.dumps(line)]
    assert len(mine) == 2
    assert all(line["request_id"] in ("trace-me-42", "trace-me-43") for line in mine)
    first = next(line for line in mine if line["request_id"] == "trace-me-42")
    assert first["status"] == 200 and first["model"] == "m" and first["principal"] == "master"
    assert first["completion_tokens"] == 8 and first["latency_ms"] > 0
    everything = json.dumps(lines)
    assert KEY not in everything and "sk-upstream-secret" not in everything


def test_bodies_are_logged_only_when_asked_and_redacted(tmp_path: Path,
                                                        fake: FakeOpenAI) -> None:
    port, process = run(tmp_path, fake, log_bodies=True, redact=[r"\b\d{3}-\d{2}-\d{4}\b"])
    content = "my SSN is 123-45-6789 and my key is sk-abcdefghijklmnop"
    response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                          headers={"authorization": f"Bearer {KEY}", "x-request-id": "b-1"},
                          json={"model": "m", "messages": [{"role": "user",
                                                            "content": content}]})
    assert response.status_code == 200
    lines = json_lines(process)
    bodies = [line for line in lines if line.get("event") == "bodies"]
    assert len(bodies) == 1 and bodies[0]["request_id"] == "b-1"
    assert "[REDACTED]" in bodies[0]["request"] and "my SSN is" in bodies[0]["request"]
    assert "123-45-6789" not in json.dumps(lines) and "sk-abcdefghijklmnop" not in json.dumps(
        lines)
    assert "Hello from the fake upstream" in bodies[0]["response"]


def test_access_line_timestamp_is_now_to_the_millisecond() -> None:
    import datetime as dt
    import time

    from llmport.observability.logging import JSONLines

    lines = JSONLines(io.BytesIO())
    for _ in range(3):  # formatted afresh, then from the kept millisecond, then afresh again
        before = int(time.time() * 1000)
        stamp = lines.timestamp()
        again = lines.timestamp()
        after = int(time.time() * 1000)
        parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert stamp.endswith("Z") and parsed.utcoffset() == dt.timedelta(0)
        assert before <= round(parsed.timestamp() * 1000) <= after
        assert before <= round(dt.datetime.fromisoformat(
            again.replace("Z", "+00:00")).timestamp() * 1000) <= after
        time.sleep(0.0015)  # the next round is in another millisecond


async def test_access_lines_are_batched_and_flushed() -> None:
    import asyncio
    import io
    import re

    from llmport.observability.logging import JSONLines

    stream = io.BytesIO()
    lines = JSONLines(stream)

    def rendered(request_id: str) -> bytes:
        return json.dumps({"event": "request", "request_id": request_id,
                           "timestamp": lines.timestamp()}).encode() + b"\n"

    lines.extend([rendered("a")])
    lines.extend([rendered("b")])
    assert stream.getvalue() == b""  # not one write per request
    await asyncio.sleep(JSONLines.DELAY * 3)
    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in written] == ["a", "b"]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])
               for line in written)
    lines.extend([rendered("c")])
    lines.flush()  # at shutdown: what is pending is written at once
    assert json.loads(stream.getvalue().splitlines()[-1])["request_id"] == "c"


def test_json_access_line_has_every_field_of_the_request_even_awkward_ones() -> None:
    """The JSON line is rendered in two parts (per request, and shared by many requests,
    kept): it must carry exactly the fields the console line does, correctly escaped, for
    each request, also after the kept parts were dropped for growing past their bound."""
    import io
    from time import perf_counter

    from llmport.gateway.context import CallContext
    from llmport.observability.events import RequestFinished
    from llmport.observability.logging import AccessLog, JSONLines
    from llmport.types import Endpoint, Principal, Usage

    stream = io.BytesIO()
    access = AccessLog(JSONLines(stream))  # no event loop: each line is written at once
    access.MAX_SHARED = 2

    def finished(request_id: str, model: str, status: int, **state: Any) -> RequestFinished:
        ctx = CallContext(request_id, Endpoint.CHAT, {}, None, model, stream=True,
                          principal=Principal(id='key "ünï"\\1', kind="key"))
        ctx.started = perf_counter() - 0.5
        ctx.first_token_at = ctx.started + 0.123456
        for name, value in state.items():
            setattr(ctx, name, value)
        return RequestFinished(ctx, status, "UpstreamError" if status >= 500 else None, None,
                               0.5, 0.000321)

    events = [
        finished('a"b\\c', 'model "x"\n\u2028', 200, usage=Usage(3, 4), deployment="d1",
                 served_model="fallback", attempts=2, trace_id="ab" * 16),
        finished("r2", "m", 502, deployment=None),
        finished("r3", "m", 200, usage=Usage(1, 0)),
        finished("r4", "m", 502, deployment=None),  # the kept parts were reset before this
    ]
    access.log(events[:1])  # batches, as the event bus delivers them
    access.log(events[1:])
    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(written) == len(events)
    for line, event in zip(written, events, strict=True):
        expected = AccessLog.fields(event)
        assert line.pop("event") == "request" and line.pop("level") == "info"
        assert line.pop("timestamp").endswith("Z")
        assert line == json.loads(json.dumps(expected))
    assert written[0]["model"] == 'model "x"\n\u2028' and written[0]["ttft_ms"] == 123.46
    assert written[0]["prompt_tokens"] == 3 and written[1]["prompt_tokens"] is None
    assert written[1]["error"] == "UpstreamError" and written[0]["overhead_ms"] == 0.321
    assert len(access._shared) <= access.MAX_SHARED


def test_access_line_is_stamped_when_its_request_finished_not_when_written() -> None:
    """Lines are rendered in batches, after their requests: each carries its own request's
    end (started + latency) on the wall clock, however late its batch comes."""
    import datetime as dt
    import io
    import time
    from time import perf_counter

    from llmport.gateway.context import CallContext
    from llmport.observability.events import RequestFinished
    from llmport.observability.logging import AccessLog, JSONLines
    from llmport.types import Endpoint

    stream = io.BytesIO()
    access = AccessLog(JSONLines(stream))
    events = []
    for ago in (3.0, 1.5):  # ended 2.5 s and 1.0 s ago
        ctx = CallContext(f"r{ago}", Endpoint.CHAT, {}, None, "m")
        ctx.started = perf_counter() - ago
        events.append(RequestFinished(ctx, 200, None, None, 0.5, 0.0001))
    now = time.time()
    access.log(events)
    stamps = [dt.datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
              .timestamp() for line in stream.getvalue().splitlines()]
    assert abs(stamps[0] - (now - 2.5)) < 0.05 and abs(stamps[1] - (now - 1.0)) < 0.05


def test_shutdown_writes_the_lines_of_requests_still_waiting_for_their_batch(
        fake: FakeOpenAI, start_gateway: Any) -> None:
    """A request's access line is rendered in the event bus's next batch: one answered just
    before shutdown is still written (the bus is drained, then the lines flushed)."""
    server = start_gateway({"logging": {"access_log": True, "format": "json"},
                            "models": [{"name": "m", "provider": "openai",
                                        "api_base": fake.url}]})
    server.gateway.events.DELAY = 3600  # no timed drain: only the one at shutdown
    stream = io.BytesIO()
    server.app.observability.access_lines._stream = stream
    response = httpx.post(server.url + "/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200 and stream.getvalue() == b""
    server.stop()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["request_id"], line["status"]) for line in lines] == [
        (response.headers["x-request-id"], 200)]

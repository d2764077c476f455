#!/usr/bin/env python3
"""Instructions the observability hooks cost a request, each part alone, under callgrind.

    bench/hook_costs.py [PART ...]     PART: events, tracing, metrics, log, all (default: each)

One request's events (an upstream attempt started and finished, the request finished,
with a realistic context) are handed to the subscribers — tracing, metrics, the JSON
access log — 10,000 times in a plain loop, under valgrind's callgrind: an attempt's start
at once, the rest in batches of 100, as the event bus delivers them; the same script
with no iterations is subtracted, and so is the cost of making the request's context
and its finished event (part ``base``). Batched work (the metric tallies, the access
log's writes) is flushed every 1,000 requests, about what a 0.2 s timer holds at full
speed. Deterministic to a few instructions, where a whole gateway under callgrind
(``instructions.sh``) moves by thousands between runs: the way to compare two versions of
a hook (``PYTHONPATH=<other tree>/src`` runs another checkout's). No event loop, no
network, no caches shared with the rest of a request: what a hook costs inside the
gateway is more (see the README's Performance section).
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PARTS = ("events", "tracing", "metrics", "log", "all")
ITERATIONS = 10_000
BATCH = 100  # requests a batch of events holds: those of 10 ms at 10,000 requests/s


class _Loop:
    """Stands in for the running loop: batches are flushed by ``run``, not by timers."""

    def call_later(self, *_: Any) -> None:
        pass


def run(part: str, iterations: int) -> None:
    import gc

    from llmport.app import GC_YOUNG_THRESHOLD

    asyncio.get_running_loop = lambda: _Loop()  # type: ignore[assignment,return-value]
    # The collector as the gateway sets it: with the default threshold, the events a batch
    # holds would cost young collections that the gateway never makes.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    from llmport.gateway.context import CallContext
    from llmport.observability.events import AttemptFinished, AttemptStarted, RequestFinished
    from llmport.observability.logging import AccessLog, JSONLines
    from llmport.observability.metrics import Metrics
    from llmport.observability.settings import TracingConfig
    from llmport.observability.tracing import Tracing
    from llmport.types import Endpoint, Principal, Usage

    principal = Principal(id="master", kind="master", is_admin=True)
    headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", b"Bearer sk-x"),
               (b"content-type", b"application/json"), (b"content-length", b"80")]
    lines = JSONLines(io.BytesIO())
    access = AccessLog(lines)
    metrics = Metrics(lambda: {"in_flight": 0, "deployments": {}})
    tracing = Tracing(TracingConfig(enabled=True, exporter="none", sample_ratio=1.0))
    model = "gpt-4o-mini"

    def attempt_events(ctx: CallContext) -> tuple[AttemptStarted, AttemptFinished]:
        return (AttemptStarted(ctx, 1, model, model, model, "openai"),
                AttemptFinished(ctx, model, model, True, None, 200, 0.001, False, 1))

    attempts: list[AttemptFinished] = []
    ends: list[RequestFinished] = []
    for index in range(iterations):
        ctx = CallContext("req_0123456789abcdef0123", Endpoint.CHAT, {"model": model}, b"{}",
                          model, headers=headers, principal=principal)
        ctx.header(b"x-request-id")  # as the API layer does first
        ctx.deployment = ctx.served_model = model
        ctx.attempts, ctx.usage, ctx.cost = 1, Usage(10, 20), 0.0
        if part in ("events", "tracing", "metrics", "all"):
            started, done = attempt_events(ctx)
            if part in ("tracing", "all"):
                tracing._attempt_started(started)
            attempts.append(done)
        ends.append(RequestFinished(ctx, 200, None, None, 0.0012, 0.0002, 0.0))
        if index % BATCH == BATCH - 1:  # what the event bus delivers every EventBus.DELAY
            if part in ("tracing", "all"):
                tracing._attempts_finished(attempts)
                tracing._finished(ends)
            if part in ("metrics", "all"):
                metrics._attempts(attempts)
                metrics._finished(ends)
            if part in ("log", "all"):
                access.log(ends)
            attempts, ends = [], []
        if index % 1000 == 999:
            lines.flush()
            metrics.tallies.flush()


def instructions(part: str, iterations: int) -> int:
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "callgrind.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, __file__, "--run", part, str(iterations)],
                       check=True, capture_output=True)
        for line in out.read_text().splitlines():
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("no totals in the callgrind output")


def main() -> None:
    if sys.argv[1:2] == ["--run"]:
        run(sys.argv[2], int(sys.argv[3]))
        return
    parts = sys.argv[1:] or list(PARTS)
    unknown = set(parts) - set(PARTS)
    if unknown:
        sys.exit(f"unknown parts: {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    source = os.environ.get("PYTHONPATH") or "this checkout"
    cost = {}
    for part in ("base", *parts):
        cost[part] = (instructions(part, ITERATIONS) - instructions(part, 0)) / ITERATIONS
    print(f"instructions a request, {ITERATIONS:,} requests, llmport from {source}:")
    print(f"  {'base (context, finished event)':34} {cost['base']:10,.0f}")
    for part in parts:
        print(f"  {part:34} {cost[part] - cost['base']:10,.0f}")


if __name__ == "__main__":
    main()

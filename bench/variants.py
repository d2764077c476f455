#!/usr/bin/env python3
"""``llmport`` with a part of it disabled, to attribute its cost (bench/alternate.py #VARIANT).

    LLMPORT_VARIANT=noop-subscribers variants.py serve --config …

Variants (comma-separated): ``noop-subscribers`` — every event subscriber's body replaced by
a function that does nothing (the events are still built and delivered); ``noop-tracing``,
``noop-metrics``, ``noop-access-log`` — only that subscriber's; ``double-subscribers`` — every
subscriber called twice per event or batch (what a subscriber's body costs where it runs,
caches and all, against the same gateway with each called once); ``time-subscribers`` —
each subscriber method timed where it runs (``perf_counter_ns`` around each call; the totals
and calls — of a batch handler, its batches — are written every second to
``$LLMPORT_VARIANT_TIMES`` or /tmp/subscriber-times-PID.txt, one ``name nanoseconds calls``
line each); ``callgrind-timers`` — the timers that flush the metrics' tallies and the access
log's lines, and the event bus's batches, stretched 50 times: under callgrind the gateway
runs about 50 times slower, so a batch flushed on a timer would hold 50 times fewer requests
than at full speed, and its fixed cost would count 50 times too much (``instructions.sh``
runs every configuration with it); ``unsubscribed`` — no subscriber subscribed at all, so
no per-request event is built (what is left is the configuration's other effects: the
policy marks of tracing, the metrics route); ``no-marks`` — the pipeline folded without
tracing's policy marks; ``bus-delay-S`` — the event bus's batches delivered S seconds after
their first event instead of ``EventBus.DELAY`` (``bus-delay-0``: at the loop's next turn);
``gc-times`` — the time the garbage collector takes, written every second to
/tmp/gc-times-PID.txt as ``nanoseconds gen0 gen1 gen2 collected``; ``arenas-2`` — glibc's
malloc held to two arenas (``mallopt(M_ARENA_MAX, 2)``, as ``MALLOC_ARENA_MAX=2`` does; the
Docker image sets it): what that costs in time, not an attribution. Never for production:
the gateway then observes nothing, or everything twice, of what it does.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from llmport.cli import main
from llmport.observability.events import EventBus

VARIANTS = set(filter(None, os.environ.get("LLMPORT_VARIANT", "").split(",")))
SUBSCRIBERS = {"noop-tracing": "Tracing", "noop-metrics": "Metrics",
               "noop-access-log": "AccessLog"}
KNOWN = {"noop-subscribers", "double-subscribers", "time-subscribers", "callgrind-timers",
         "unsubscribed", "no-marks", "gc-times", "arenas-2", *SUBSCRIBERS}
M_ARENA_MAX = -8  # glibc's mallopt parameter
TIMER_STRETCH = 50
TIMES: dict[str, list[int]] = {}  # subscriber method → [nanoseconds, calls]
_subscribe = EventBus.subscribe


def _nothing(_: Any) -> None:
    pass


def _timed(handler: Any) -> Any:
    totals = TIMES.setdefault(getattr(handler, "__qualname__", type(handler).__name__), [0, 0])
    clock = time.perf_counter_ns

    def timed(event: Any) -> None:
        began = clock()
        handler(event)
        totals[0] += clock() - began
        totals[1] += 1

    return timed


def _write_times() -> None:
    path = os.environ.get("LLMPORT_VARIANT_TIMES") or f"/tmp/subscriber-times-{os.getpid()}.txt"
    while True:
        time.sleep(1)
        with open(path, "w") as out:
            out.writelines(f"{name} {ns} {calls}\n" for name, (ns, calls) in TIMES.items())


def _handlers(subscriber: Any, kinds: tuple[type, ...]) -> list[tuple[type, Any]]:
    """(event type, callable) for each at-once subscription ``EventBus.subscribe`` would make."""
    handlers = getattr(subscriber, "handlers", None)
    if (handlers is not None or hasattr(subscriber, "batch_handlers")) and not kinds:
        return list((handlers or {}).items())
    return [(kind, subscriber) for kind in kinds or getattr(subscriber, "handles", ())]


def subscribe(bus: EventBus, subscriber: Any, *kinds: type) -> None:
    silenced = "noop-subscribers" in VARIANTS or any(
        type(subscriber).__name__ == name for variant, name in SUBSCRIBERS.items()
        if variant in VARIANTS)
    pairs = _handlers(subscriber, kinds)
    batched = list(getattr(subscriber, "batch_handlers", {}).items()) if not kinds else []
    if not pairs and not batched:  # a subscriber of every event: left as it is
        _subscribe(bus, subscriber, *kinds)
    for kind, handler in pairs:
        bus.listeners(kind).extend(_wrapped(handler, silenced))
    for kind, handler in batched:
        bus.batch(kind).handlers.extend(_wrapped(handler, silenced))


def _wrapped(handler: Any, silenced: bool) -> list[Any]:
    """What to subscribe in ``handler``'s place (timed, a batch handler's calls are its batches)."""
    if silenced:
        return [_nothing]
    if "time-subscribers" in VARIANTS:
        return [_timed(handler)]
    if "double-subscribers" in VARIANTS:
        return [handler, handler]
    return [handler]


def _gc_times() -> None:
    import gc

    totals = [0, 0, 0, 0, 0]  # nanoseconds, collections of each generation, objects collected
    began = [0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter_ns()
            return
        totals[0] += time.perf_counter_ns() - began[0]
        totals[1 + info["generation"]] += 1
        totals[4] += info["collected"]

    def write() -> None:
        while True:
            time.sleep(1)
            with open(f"/tmp/gc-times-{os.getpid()}.txt", "w") as out:
                out.write(" ".join(map(str, totals)) + "\n")

    gc.callbacks.append(timed)
    threading.Thread(target=write, daemon=True).start()


delays = {v for v in VARIANTS if v.startswith("bus-delay-")}
for delay in delays:
    EventBus.DELAY = float(delay.removeprefix("bus-delay-"))
unknown = VARIANTS - KNOWN - delays
if unknown:
    sys.exit(f"unknown variants: {', '.join(sorted(unknown))}")
if "time-subscribers" in VARIANTS:
    threading.Thread(target=_write_times, daemon=True).start()
if "callgrind-timers" in VARIANTS:
    from llmport.observability import logging as access_logging
    from llmport.observability import tallies

    tallies.FLUSH_DELAY *= TIMER_STRETCH
    access_logging.JSONLines.DELAY *= TIMER_STRETCH
    EventBus.DELAY *= TIMER_STRETCH
if "gc-times" in VARIANTS:
    _gc_times()
if "arenas-2" in VARIANTS:
    import ctypes

    ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 2)
if "no-marks" in VARIANTS:
    from llmport.gateway import gateway, pipeline

    gateway.fold = lambda policies, terminal, timed=False: pipeline.fold(  # type: ignore[attr-defined]
        policies, terminal)
if "unsubscribed" in VARIANTS:
    EventBus.subscribe = lambda *_, **__: None  # type: ignore[method-assign]
else:
    EventBus.subscribe = subscribe  # type: ignore[method-assign,assignment]
sys.argv[0] = "llmport"
main()

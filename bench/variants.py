#!/usr/bin/env python3
"""``llmport`` with a part of it disabled, to attribute its cost (bench/alternate.py #VARIANT).

    LLMPORT_VARIANT=noop-subscribers variants.py serve --config …

Variants (comma-separated): ``noop-subscribers`` — every event subscriber's body replaced by
a function that does nothing (the events are still built and delivered); ``noop-tracing``,
``noop-metrics``, ``noop-access-log`` — only that subscriber's. Never for production: the
gateway then observes nothing of what it does.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from llmport.cli import main
from llmport.observability.events import EventBus

VARIANTS = set(filter(None, os.environ.get("LLMPORT_VARIANT", "").split(",")))
SUBSCRIBERS = {"noop-tracing": "Tracing", "noop-metrics": "Metrics",
               "noop-access-log": "AccessLog"}
_subscribe = EventBus.subscribe


def _nothing(_: Any) -> None:
    pass


def subscribe(bus: EventBus, subscriber: Any, *kinds: type) -> None:
    silenced = "noop-subscribers" in VARIANTS or any(
        type(subscriber).__name__ == name for variant, name in SUBSCRIBERS.items()
        if variant in VARIANTS)
    if not silenced:
        _subscribe(bus, subscriber, *kinds)
        return
    handlers = getattr(subscriber, "handlers", None)
    for kind in kinds or (handlers or getattr(subscriber, "handles", ())):
        bus.listeners(kind).append(_nothing)


unknown = VARIANTS - {"noop-subscribers", *SUBSCRIBERS}
if unknown:
    sys.exit(f"unknown variants: {', '.join(sorted(unknown))}")
EventBus.subscribe = subscribe  # type: ignore[method-assign]
sys.argv[0] = "llmport"
main()

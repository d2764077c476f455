"""Batched metric updates reach prometheus_client exactly as direct updates would."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from llmport.observability.tallies import FLUSH_DELAY, Tallies

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0005, 0.001, 0.0010001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 30.0, -1.0]


def metrics() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    return (registry, Counter("c", "c", ["k"], registry=registry),
            Histogram("h", "h", ["k"], buckets=BUCKETS, registry=registry))


def exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if not line.startswith("#") and "_created" not in line]


def test_a_flush_gives_what_direct_updates_give() -> None:
    direct, direct_counter, direct_histogram = metrics()
    batched, counter, histogram = metrics()
    tallies = Tallies()
    count, observe = tallies.counter(counter.labels("a")), tallies.histogram(histogram.labels("a"))
    for value in VALUES:  # bucket edges included: an amount equal to a bound is in that bucket
        direct_histogram.labels("a").observe(value)
        observe.observe(value)
        direct_counter.labels("a").inc(3)
        count.inc(3)
    assert exposition(batched) != exposition(direct)  # nothing is visible before a flush
    tallies.flush()
    assert exposition(batched) == exposition(direct)
    tallies.flush()  # a second flush adds nothing
    assert exposition(batched) == exposition(direct)


def test_updates_flush_by_themselves_shortly_after() -> None:
    registry, counter, _ = metrics()

    async def scenario() -> float | None:
        tallies = Tallies()
        tally = tallies.counter(counter.labels("x"))
        tally.inc()
        tallies.touch()  # what an updater does once per batch of updates
        tally.inc(2)
        tallies.touch()
        await asyncio.sleep(FLUSH_DELAY * 2)
        return registry.get_sample_value("c_total", {"k": "x"})

    assert asyncio.run(scenario()) == 3.0

"""Per-worker aggregation of the hottest metric updates, added to prometheus_client in batches.

A request updates about ten counters and histograms. Through prometheus_client
each update takes a lock and checks its labels (about 1 µs, 10 µs a request);
a tally is a plain number (or a list of bucket counts) that the request path
bumps, and ``Tallies.flush`` adds what accumulated to the real metric children:
before every scrape, at shutdown, and 0.2 s after the first ``touch()`` since
the last flush (so the files of multiprocess mode, which other workers read, are
at most that much behind). Values reach Prometheus exactly, only batched.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

FLUSH_DELAY = 0.2


class CounterTally:
    __slots__ = ("child", "value")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def flush(self) -> None:
        if self.value:
            self.child.inc(self.value)
            self.value = 0.0


class HistogramTally:
    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        # prometheus_client's own rule: the first bucket whose bound is >= the amount
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def flush(self) -> None:
        child = self.child
        for index, count in enumerate(self.counts):
            if count:
                child._buckets[index].inc(count)
                self.counts[index] = 0
        if self.total:
            child._sum.inc(self.total)
            self.total = 0.0


class Tallies:
    """Every tally of one registry. Updates are plain arithmetic on the tallies (the
    metrics subscriber makes them inline, not through ``inc``/``observe``, on its
    hottest path); ``touch()``, once per batch of updates, makes sure a flush follows
    within ``FLUSH_DELAY`` (that path calls it only while ``scheduled`` is false: the
    check costs a tenth of the call). A flush visits every tally, touched or not:
    there are a few per label set, and a flush runs at most five times a second."""

    def __init__(self) -> None:
        self._tallies: list[CounterTally | HistogramTally] = []
        self.scheduled = False

    def counter(self, child: Any) -> CounterTally:
        tally = CounterTally(child)
        self._tallies.append(tally)
        return tally

    def histogram(self, child: Any) -> HistogramTally:
        tally = HistogramTally(child)
        self._tallies.append(tally)
        return tally

    def touch(self) -> None:
        if not self.scheduled:
            try:
                asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
                self.scheduled = True
            except RuntimeError:  # no event loop (a direct call): flushed at the next scrape
                pass

    def flush(self) -> None:
        self.scheduled = False
        for tally in self._tallies:
            tally.flush()

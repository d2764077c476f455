"""Per-worker aggregation of the hottest metric updates, added to prometheus_client in batches.

A request updates about ten counters and histograms. Through prometheus_client
each update takes a lock and checks its labels (about 1 µs, 10 µs a request);
a tally is a plain number (or a list of bucket counts) that the request path
bumps, and ``Tallies.flush`` adds what accumulated to the real metric children:
before every scrape, at shutdown, and 0.2 s after the first update since the
last flush (so the files of multiprocess mode, which other workers read, are at
most that much behind). Values reach Prometheus exactly, only batched.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import Any

FLUSH_DELAY = 0.2


class CounterTally:
    __slots__ = ("child", "owner", "pending", "value")

    def __init__(self, owner: Tallies, child: Any) -> None:
        self.owner = owner
        self.child = child
        self.value = 0.0
        self.pending = False

    def inc(self, amount: float = 1.0) -> None:
        if not self.pending:
            self.pending = True
            self.owner.dirty(self)
        self.value += amount

    def flush(self) -> None:
        self.pending = False
        if self.value:
            self.child.inc(self.value)
            self.value = 0.0


class HistogramTally:
    __slots__ = ("bounds", "child", "counts", "owner", "pending", "total")

    def __init__(self, owner: Tallies, child: Any) -> None:
        self.owner = owner
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self.pending = False

    def observe(self, amount: float) -> None:
        if not self.pending:
            self.pending = True
            self.owner.dirty(self)
        # prometheus_client's own rule: the first bucket whose bound is >= the amount
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def flush(self) -> None:
        self.pending = False
        child = self.child
        for index, count in enumerate(self.counts):
            if count:
                child._buckets[index].inc(count)
                self.counts[index] = 0
        child._sum.inc(self.total)
        self.total = 0.0


class Tallies:
    def __init__(self) -> None:
        self._dirty: list[CounterTally | HistogramTally] = []
        self._scheduled = False

    def counter(self, child: Any) -> CounterTally:
        return CounterTally(self, child)

    def histogram(self, child: Any) -> HistogramTally:
        return HistogramTally(self, child)

    def dirty(self, tally: CounterTally | HistogramTally) -> None:
        self._dirty.append(tally)
        if not self._scheduled:
            try:
                asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
                self._scheduled = True
            except RuntimeError:  # no event loop (a direct call): flushed at the next scrape
                pass

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for tally in dirty:
            tally.flush()

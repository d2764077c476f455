"""Micro-batching: concurrent requests' items joined into one call of a batch function.

A model's forward pass over 32 texts costs little more than over one, so
requests arriving together are served together. The first request to find
the batcher idle waits at most ``max_wait`` for company (or until
``max_batch`` items are in line); requests arriving while a batch runs form
the next batch, which starts as soon as the device is free. The batch
function runs in one worker thread, so batches never compete for the device.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from time import monotonic
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(slots=True)
class _Waiting(Generic[In, Out]):
    items: list[In]
    future: asyncio.Future[list[Out]]
    since: float = field(default_factory=monotonic)


class MicroBatcher(Generic[In, Out]):
    """Serves ``submit(items)`` calls by batched calls of ``run(all_items) -> outputs``."""

    def __init__(self, run: Callable[[list[In]], list[Out]], *, max_batch: int,
                 max_wait: float, name: str = "batcher") -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._line: list[_Waiting[In, Out]] = []
        self._queued = 0
        self._full = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self.batches = 0  # batch calls made, for metrics and tests
        self.items = 0

    async def submit(self, items: list[In]) -> list[Out]:
        """The outputs for ``items``, in order, computed in a batch with whoever else is here."""
        future: asyncio.Future[list[Out]] = asyncio.get_running_loop().create_future()
        self._line.append(_Waiting(items, future))
        self._queued += len(items)
        if self._queued >= self.max_batch:
            self._full.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain())
        return await future  # a cancelled caller leaves; its items are skipped or dropped

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._line:
            await self._gather(self._line[0].since)
            batch = self._take()
            if not batch:
                continue
            items = [item for waiting in batch for item in waiting.items]
            self.batches += 1
            self.items += len(items)
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, items)
            except Exception as exc:
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                continue
            start = 0
            for waiting in batch:
                end = start + len(waiting.items)
                if not waiting.future.done():
                    waiting.future.set_result(outputs[start:end])
                start = end

    async def _gather(self, oldest: float) -> None:
        """Wait for a full batch, at most until the oldest request has waited ``max_wait``."""
        remaining = oldest + self.max_wait - monotonic()
        if self._queued >= self.max_batch or remaining <= 0:
            return
        self._full.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._full.wait(), remaining)

    def _take(self) -> list[_Waiting[In, Out]]:
        """Whole requests from the head of the line, up to ``max_batch`` items (at least one)."""
        batch: list[_Waiting[In, Out]] = []
        size = 0
        while self._line and (not batch or size + len(self._line[0].items) <= self.max_batch):
            waiting = self._line.pop(0)
            self._queued -= len(waiting.items)
            if waiting.future.done():  # its caller was cancelled while waiting
                continue
            batch.append(waiting)
            size += len(waiting.items)
        if self._queued < self.max_batch:
            self._full.clear()
        return batch

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

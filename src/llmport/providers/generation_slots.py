"""A bounded set of generation threads for one local model, with a line to wait in.

Generation is blocking CPU/GPU work, so it runs in threads, never on the
event loop. ``max_concurrency`` threads run at most; more requests wait in
an asyncio line (first come, first served, and a request cancelled while
waiting simply leaves it) instead of thrashing the device. A slot is freed
when its thread returns, not when its client leaves: the thread is told to
stop and does within one token step, and only then does the next request
start, so the bound always holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class GenerationSlots:
    """``max_concurrency`` generation threads and the counters that show how busy they are."""

    def __init__(self, name: str, max_concurrency: int) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="llmport-gen")
        self.active = 0  # threads running now
        self.waiting = 0  # requests in line
        self.peak_active = 0
        self.started = 0

    async def start(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """Wait for a free slot, then run ``work`` in a generation thread.

        Returns the thread's future; the slot is freed when it completes,
        whether or not anyone awaits it.
        """
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        self.started += 1
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: asyncio.Future[T]) -> None:
        if not future.cancelled():
            future.exception()  # retrieved here: a client that left never awaits it
        self._release()

    def _release(self) -> None:
        self.active -= 1
        self._semaphore.release()

    def shutdown(self) -> None:
        """Stop taking work; running threads finish (their jobs are cancelled by the owner)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

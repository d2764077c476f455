"""The micro-batcher: concurrent submissions share one batch call, in order, with a bounded wait."""

from __future__ import annotations

import asyncio
import threading

import pytest

from llmport.providers.micro_batcher import MicroBatcher


class Recorder:
    """A batch function that doubles numbers and remembers each batch it was given."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate

    def __call__(self, items: list[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError("negative")
        return [i * 2 for i in items]


async def test_concurrent_submissions_are_one_batch_and_each_gets_its_own_outputs() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=64, max_wait=0.05)
    results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(10)))
    assert results == [[i * 2, (i + 100) * 2] for i in range(10)]
    assert len(run.batches) == 1 and len(run.batches[0]) == 20
    batcher.close()


async def test_a_full_batch_does_not_wait_and_batches_respect_the_size() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=4, max_wait=30.0)  # would time out the test if waited
    results = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit([i]) for i in range(8))), 5)
    assert [r[0] for r in results] == [i * 2 for i in range(8)]
    assert all(len(b) <= 4 for b in run.batches) and sum(map(len, run.batches)) == 8
    batcher.close()


async def test_a_request_larger_than_the_batch_goes_alone() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=2, max_wait=0.0)
    assert await batcher.submit([1, 2, 3, 4, 5]) == [2, 4, 6, 8, 10]
    assert run.batches == [[1, 2, 3, 4, 5]]
    batcher.close()


async def test_requests_arriving_during_a_batch_form_the_next_one() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = MicroBatcher(run, max_batch=100, max_wait=0.0)
    first = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0.05)  # the first batch is running, held by the gate
    later = [asyncio.ensure_future(batcher.submit([i])) for i in range(10, 15)]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(first, *later)
    assert run.batches == [[1], [10, 11, 12, 13, 14]]
    batcher.close()


async def test_a_failed_batch_fails_its_requests_and_the_batcher_goes_on() -> None:
    run = Recorder()
    batcher = MicroBatcher(run, max_batch=10, max_wait=0.01)
    results = await asyncio.gather(batcher.submit([1]), batcher.submit([-1]),
                                   return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    assert await batcher.submit([3]) == [6]
    batcher.close()


async def test_a_cancelled_request_is_left_out() -> None:
    gate = threading.Event()
    run = Recorder(gate)
    batcher = MicroBatcher(run, max_batch=100, max_wait=0.0)
    first = asyncio.ensure_future(batcher.submit([1]))
    await asyncio.sleep(0.05)
    leaving = asyncio.ensure_future(batcher.submit([2]))
    staying = asyncio.ensure_future(batcher.submit([3]))
    await asyncio.sleep(0.01)
    leaving.cancel()
    gate.set()
    assert await staying == [6]
    await first
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert run.batches == [[1], [3]]
    batcher.close()

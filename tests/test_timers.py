"""Coarse timers (llmport.timers) and the running-task helper (llmport.running).

The coarse path is exercised with a short tick (50 ms) and threshold (100 ms): a timer
must never fire before its deadline, fire within a tick (plus scheduling slack) after it,
and leave nothing behind once fired or cancelled.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from llmport import running, timers
from llmport.timers import CoarseTimers, TaskDeadline, coarse_timers

TICK = 0.05
SLACK = 0.25  # a loaded CI machine's lateness on top of one tick


def small(loop: asyncio.AbstractEventLoop) -> CoarseTimers:
    return CoarseTimers(loop, tick_s=TICK, min_delay_s=0.1)


async def test_a_coarse_timer_fires_after_its_deadline_never_before() -> None:
    loop = asyncio.get_running_loop()
    coarse = small(loop)
    fired: list[tuple[str, float]] = []
    start = loop.time()
    for delay in (0.23, 0.12, 0.31):
        coarse.call_at(start + delay, lambda d=delay: fired.append((str(d), loop.time())))
    assert coarse.pending == 3
    await asyncio.sleep(0.31 + TICK + SLACK)
    assert [name for name, _ in fired] == ["0.12", "0.23", "0.31"]  # in deadline order
    for name, at in fired:
        late = at - (start + float(name))
        assert 0 <= late <= TICK + SLACK, (name, late)
    assert coarse.pending == 0


async def test_cancelled_timers_do_not_fire_and_are_forgotten() -> None:
    loop = asyncio.get_running_loop()
    coarse = small(loop)
    fired: list[str] = []
    kept = coarse.call_later(0.15, fired.append, "kept")
    dropped = coarse.call_later(0.15, fired.append, "dropped")
    dropped.cancel()
    dropped.cancel()  # twice is harmless
    assert coarse.pending == 1
    await asyncio.sleep(0.15 + TICK + SLACK)
    assert fired == ["kept"]
    kept.cancel()  # after firing: harmless
    assert coarse.pending == 0


async def test_a_callback_may_cancel_another_timer_of_its_bucket() -> None:
    loop = asyncio.get_running_loop()
    coarse = small(loop)
    fired: list[str] = []
    when = loop.time() + 0.15
    second: list[timers.Cancellable] = []

    def first() -> None:
        fired.append("first")
        second[0].cancel()

    coarse.call_at(when, first)
    second.append(coarse.call_at(when, fired.append, "second"))
    await asyncio.sleep(0.15 + TICK + SLACK)
    assert fired == ["first"]


async def test_a_failing_callback_is_reported_and_the_others_still_fire() -> None:
    loop = asyncio.get_running_loop()
    coarse = small(loop)
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    fired: list[str] = []
    when = loop.time() + 0.15
    coarse.call_at(when, lambda: 1 / 0)
    coarse.call_at(when, fired.append, "after")
    await asyncio.sleep(0.15 + TICK + SLACK)
    loop.set_exception_handler(None)
    assert fired == ["after"]
    assert isinstance(reported[0]["exception"], ZeroDivisionError)


async def test_short_delays_use_the_loops_exact_timers() -> None:
    loop = asyncio.get_running_loop()
    coarse = small(loop)
    handle = coarse.call_later(0.05, lambda: None)
    assert isinstance(handle, asyncio.TimerHandle)
    assert coarse.pending == 0
    handle.cancel()


async def test_task_deadline_raises_timeout_error_and_undoes_its_cancel() -> None:
    loop = asyncio.get_running_loop()
    coarse = small(loop)
    task = asyncio.current_task()
    assert task is not None
    start = loop.time()
    with pytest.raises(TimeoutError), TaskDeadline(task, start + 0.15, coarse) as deadline:
        await asyncio.sleep(5)
    assert deadline.expired
    assert 0.15 <= loop.time() - start <= 0.15 + TICK + SLACK
    assert task.cancelling() == 0  # the task may go on, and be cancelled for real later
    await asyncio.sleep(0)


async def test_task_deadline_not_reached_leaves_no_timer() -> None:
    loop = asyncio.get_running_loop()
    coarse = small(loop)
    task = asyncio.current_task()
    assert task is not None
    with TaskDeadline(task, loop.time() + 5, coarse) as deadline:
        await asyncio.sleep(0.01)
    assert not deadline.expired
    assert coarse.pending == 0


async def test_an_outside_cancel_under_a_task_deadline_stays_a_cancel() -> None:
    loop = asyncio.get_running_loop()
    coarse = small(loop)

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        with TaskDeadline(task, loop.time() + 5, coarse):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(guarded())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert coarse.pending == 0


async def test_each_loop_has_its_own_coarse_timers() -> None:
    loop = asyncio.get_running_loop()
    assert coarse_timers(loop) is coarse_timers(loop)
    other = asyncio.new_event_loop()
    try:
        assert coarse_timers(other) is not coarse_timers(loop)
    finally:
        other.close()


def test_current_task_follows_the_running_loop_across_loops_and_threads() -> None:
    async def same() -> bool:
        return running.current_task() is asyncio.current_task()

    assert asyncio.run(same())
    assert asyncio.run(same())  # a new loop on this thread: not the remembered one
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(same())))
    thread.start()
    thread.join()
    assert results == [True]
    assert asyncio.run(same())

    with pytest.raises(RuntimeError):
        running.current_task()  # no task runs here


def test_a_closed_loop_and_its_coarse_timers_are_not_kept_alive(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import weakref

    monkeypatch.setattr(timers, "_last", (lambda: None, None))
    refs = []
    for _ in range(3):
        loop = asyncio.new_event_loop()
        coarse_timers(loop).call_later(20, print)  # a pending timer, and its loop timer
        refs.append(weakref.ref(loop))
        loop.close()
        del loop
    other = asyncio.new_event_loop()  # the remembered "last" loop is another one now
    coarse_timers(other).call_later(20, print)
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    assert other in timers._by_loop
    other.close()


async def test_an_earlier_deadline_moves_the_loop_timer_forward() -> None:
    loop = asyncio.get_running_loop()
    coarse = small(loop)
    fired: list[str] = []
    coarse.call_later(1.0, fired.append, "late")
    coarse.call_later(0.15, fired.append, "early")  # supersedes the loop timer set for 1 s
    await asyncio.sleep(0.15 + TICK + SLACK)
    assert fired == ["early"]
    await asyncio.sleep(1.0 - 0.15)
    assert fired == ["early", "late"]

"""The event bus: what reaches whom."""

from __future__ import annotations


def test_event_bus_listener_lists_are_live() -> None:
    """Emitters take a type's listener list once, before anything subscribes: later
    subscriptions (by type, by ``handlers``, or to every event) must reach them."""
    from llmport.observability.events import CacheLookup, EventBus, RequestStarted

    bus = EventBus()
    held = bus.listeners(CacheLookup)
    assert held == [] and not bus.wants(CacheLookup)
    seen: list[tuple[str, object]] = []
    bus.subscribe(lambda event: seen.append(("typed", event)), CacheLookup)

    class Everything:
        def __call__(self, event: object) -> None:
            seen.append(("all", event))

    bus.subscribe(Everything())
    assert bus.wants(CacheLookup) and bus.wants(RequestStarted)
    event = CacheLookup("r1", "m", hit=True)
    for subscriber in held:
        subscriber(event)
    assert seen == [("typed", event), ("all", event)]
    assert bus.listeners(CacheLookup) is held
    bus.emit(CacheLookup("r2", "m", hit=False))
    assert len(seen) == 4


def _finished_and_attempt(request_id: str) -> tuple[object, object]:
    from llmport.gateway.context import CallContext
    from llmport.observability.events import AttemptFinished, RequestFinished
    from llmport.types import Endpoint

    ctx = CallContext(request_id, Endpoint.CHAT, {}, None, "m")
    return (AttemptFinished(ctx, "m", "d", False, True, None, 200, 0.01, attempt=1),
            RequestFinished(ctx, 200, None, None, 0.02, 0.001))


async def test_batches_come_after_the_delay_ends_after_attempts_and_survive_a_failing_hook(
        capsys: object) -> None:
    """Batch subscribers get nothing on the request path; one drain, DELAY later, hands
    each its events in order — a request's end after its attempts, whichever type's batch
    was made first — and a subscriber that raises loses only its own batch."""
    import asyncio

    from llmport.observability.events import AttemptFinished, EventBus, RequestFinished

    bus = EventBus()
    ends = bus.batch(RequestFinished)  # made before the attempts' batch, as the gateway does
    attempts = bus.batch(AttemptFinished)
    seen: list[tuple[str, list[str]]] = []

    class Subscriber:
        def __init__(self, name: str) -> None:
            self.batch_handlers = {
                RequestFinished: lambda events: seen.append(
                    (f"{name}:end", [e.ctx.request_id for e in events])),
                AttemptFinished: lambda events: seen.append(
                    (f"{name}:attempt", [e.ctx.request_id for e in events]))}

    def broken(events: list[object]) -> None:
        raise RuntimeError("a hook's bug")

    assert not bus.wants(RequestFinished)
    bus.subscribe(Subscriber("a"))
    bus.subscribe(broken, RequestFinished)  # a plain subscriber: called at once
    bus.batch(RequestFinished).handlers.insert(0, broken)  # and one taking batches, first
    assert bus.wants(RequestFinished) and bus.wants(AttemptFinished)
    for request_id in ("r1", "r2"):
        attempt, end = _finished_and_attempt(request_id)
        bus.emit(attempt)
        bus.emit(end)  # the plain broken subscriber raises here, logged, not raised
    assert seen == [] and bus.scheduled  # nothing yet: the request path only queued them
    assert len(ends.events) == 2 and len(attempts.events) == 2
    await asyncio.sleep(EventBus.DELAY * 5)
    assert seen == [("a:attempt", ["r1", "r2"]), ("a:end", ["r1", "r2"])]
    assert not bus.scheduled and ends.events == [] and attempts.events == []
    logged = capsys.readouterr()  # type: ignore[attr-defined]
    logged = logged.out + logged.err
    # at each emit (two), and once for the batch, which names how many events it lost
    assert logged.count("an event subscriber failed") == 3 and logged.count("batch=2") == 1


def test_without_an_event_loop_a_batch_is_delivered_at_once() -> None:
    from llmport.observability.events import EventBus, RequestFinished

    bus = EventBus()
    got: list[object] = []
    bus.batch(RequestFinished).handlers.append(got.extend)
    _, end = _finished_and_attempt("r1")
    bus.emit(end)
    assert got == [end] and not bus.scheduled

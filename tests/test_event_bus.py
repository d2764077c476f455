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
    return (AttemptFinished(ctx, "m", "d", True, None, 200, 0.01, attempt=1),
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


async def test_a_finished_request_with_no_listener_at_once_is_built_and_priced_in_the_batch(
        ) -> None:
    """With only batch subscribers, the request path queues a request's fields, and its
    attempt's, as plain tuples (nothing built, nothing priced there); the drain builds the
    events, priced. With a listener at once, the event it got is the one the batch hands on."""
    import asyncio

    from llmport.config import Config
    from llmport.gateway.context import CallContext
    from llmport.gateway.gateway import Gateway
    from llmport.observability.events import AttemptFinished, EventBus, RequestFinished
    from llmport.types import Endpoint, Usage

    config = Config.model_validate({"spend_log": {"enabled": False}, "models": [
        {"name": "m", "provider": "demo", "pricing": {"input": 1.0, "output": 2.0}}]})
    gateway = Gateway(config)
    ends: list[RequestFinished] = []
    attempts: list[AttemptFinished] = []
    gateway.events.subscribe(type("Batched", (), {"batch_handlers": {
        RequestFinished: ends.extend, AttemptFinished: attempts.extend}})())
    deployment = gateway.router.deployments[0]

    def answered(request_id: str) -> CallContext:
        ctx = CallContext(request_id, Endpoint.CHAT, {}, None, "m")
        ctx.attempts, ctx.usage = 1, Usage(1000, 500)
        gateway.router._emit_attempt(ctx, "m", deployment, None, 0.25, False, 1)
        ctx.served_model, ctx.deployment = "m", deployment.name
        gateway.in_flight += 1
        gateway.finish(ctx, 200)
        return ctx

    first = answered("r1")
    queued = gateway.events.batch(RequestFinished).events
    assert [type(e) for e in queued] == [tuple] and first.cost is None
    assert [type(e) for e in gateway.events.batch(AttemptFinished).events] == [tuple]
    await asyncio.sleep(EventBus.DELAY * 5)
    assert [type(e) for e in ends] == [RequestFinished] and ends[0].ctx is first
    assert ends[0].status == 200 and ends[0].error_type is None and ends[0].latency_s > 0
    assert ends[0].cost == first.cost == (1000 * 1.0 + 500 * 2.0) / 1_000_000
    assert len(attempts) == 1 and attempts[0].ctx is first and attempts[0].ok
    assert (attempts[0].deployment, attempts[0].duration_s, attempts[0].attempt) == (
        deployment.name, 0.25, 1)

    at_once: list[RequestFinished] = []
    gateway.events.subscribe(at_once.append, RequestFinished)
    second = answered("r2")
    assert len(at_once) == 1 and at_once[0].cost == second.cost  # priced on the path for it
    await asyncio.sleep(EventBus.DELAY * 5)
    assert ends[1] is at_once[0]


def test_a_queued_event_that_cannot_be_built_is_logged_and_only_it_is_lost(
        capsys: object) -> None:
    """The drain builds queued fields with the batch's ``make``; one that raises is logged
    and dropped, the rest of the batch still reaches its subscribers."""
    from llmport.observability.events import EventBus, RequestFinished

    bus = EventBus()
    batch = bus.batch(RequestFinished)
    got: list[object] = []
    batch.handlers.append(got.extend)

    def make(request_id: str, status: int) -> tuple[str, int]:
        if status < 0:
            raise ValueError("unbuildable")
        return (request_id, status)

    batch.make = make
    batch.events.extend([("r1", 200), ("r2", -1), ("r3", 500)])
    bus.drain()
    assert got == [("r1", 200), ("r3", 500)] and batch.events == []
    out = capsys.readouterr()  # type: ignore[attr-defined]
    logged = out.err + out.out
    assert "an event subscriber failed" in logged and "make" in logged

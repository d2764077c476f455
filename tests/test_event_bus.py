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

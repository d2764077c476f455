"""Collect a gateway's ``RequestFinished`` events.

The event is emitted once the response is over, after the client may already have read
it, so a test waits for the count it expects instead of reading the list at once.
"""

from __future__ import annotations

import time
from typing import Any

from llmport.observability.events import RequestFinished


class Finished(list[RequestFinished]):
    def __call__(self, event: Any) -> None:
        if isinstance(event, RequestFinished):
            self.append(event)

    def wait(self, count: int, timeout: float = 5.0) -> Finished:
        deadline = time.monotonic() + timeout
        while len(self) < count and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(self) >= count, f"{len(self)} requests finished, expected {count}"
        return self


def finished_events(gateway: Any) -> Finished:
    events = Finished()
    gateway.events.subscribe(events)
    return events

"""Recorded wire payloads from tests/fixtures/ (see its README for where each comes from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def sse(name: str) -> list[tuple[str | None, Any]]:
    """The events of a recorded SSE body as (event name, parsed data); ``[DONE]`` stays a str."""
    events: list[tuple[str | None, Any]] = []
    for raw in (FIXTURES / name).read_text().strip().split("\n\n"):
        event: str | None = None
        data = ""
        for line in raw.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data = value
        events.append((event, data if data == "[DONE]" else orjson.loads(data)))
    return events

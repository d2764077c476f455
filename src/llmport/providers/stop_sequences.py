"""Stop sequences over streamed text: cut at the first match, never leak a partial one.

Text arrives in pieces (one decoded token at a time) and a stop sequence may
straddle pieces, so the tail that could still grow into a stop sequence is
held back until the next piece decides it. Pure Python: it runs in the
generation thread, and its tests need no model.
"""

from __future__ import annotations


class StopMatcher:
    """Feeds on text deltas; says what may be sent and whether a stop sequence was hit."""

    __slots__ = ("_held", "_stops", "stopped")

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """The part of ``held + delta`` that is safe to emit; sets ``stopped`` on a match."""
        if self.stopped:
            return ""
        if not self._stops:
            return delta
        text = self._held + delta
        cut = min((i for i in (text.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._partial_tail(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """At the end of generation: the held-back text, which turned out not to be a stop."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_tail(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:size]):
                    best = size
                    break
        return best

"""What the guardrails look for: personal data (patterns, and the checksums that tell a card
or IBAN from any long number) and prompt-injection phrases.

Detection is by pattern, as in most gateways: it finds the common formats and misses
personal data written out in words. A match is replaced by its kind in brackets
(``[EMAIL]``); the matched text itself is never logged or put in an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from llmport.guardrails.settings import ENTITIES


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _iban(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in moved)) % 97 == 1


def _phone(text: str) -> bool:
    return 9 <= sum(char.isdigit() for char in text) <= 15


# kind → (pattern, a check of the match, or None)
BUILT_IN: dict[str, tuple[str, Callable[[str], bool] | None]] = {
    "email": (r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
              r"(?![\w-])", None),
    "credit_card": (r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", _card),
    "us_ssn": (r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])", None),
    "iban": (r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])", _iban),
    "ipv4": (r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
             r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])", None),
    # International numbers (+44 20 7946 0958, +1 415 555 0100) and the North American form
    # ((555) 123-4567, 555-123-4567); 9 to 15 digits. Other national forms look like any
    # group of numbers, so they are left to configured patterns.
    "phone": (r"(?<![\w+])(?:\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,4})){2,5}"
              r"|(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4})(?![\w-])", _phone),
}
assert set(BUILT_IN) == set(ENTITIES)
# Checked in this order, and an earlier kind's match wins where two overlap (a card number
# is not also a phone number).
ORDER = ("email", "iban", "credit_card", "us_ssn", "ipv4", "phone")

INJECTION_PHRASES = (
    r"\b(?:ignore|disregard|forget|override)\b.{0,40}\b(?:previous|prior|above|earlier|"
    r"preceding|all|any|your)\b.{0,40}\b(?:instructions?|prompts?|rules|directions?|"
    r"guidelines)\b",
    r"\b(?:reveal|print|show|repeat|output|leak)\b.{0,40}\b(?:system|hidden|initial|"
    r"original)\s+(?:prompt|instructions?|message)\b",
    r"\byou\s+are\s+now\s+(?:in\s+)?(?:DAN|developer\s+mode|jailbroken|unrestricted)\b",
    r"\bdo\s+anything\s+now\b",
    r"\bpretend\s+(?:that\s+)?you\s+(?:have|are\s+under)\s+no\s+(?:rules|restrictions|"
    r"guidelines)\b",
    r"<\|?(?:im_start|im_end|system|endoftext)\|?>",  # chat-template tokens in user text
)


# A long text is scanned in segments: one regular-expression call holds the GIL for as long
# as it scans, so a worker thread scanning a megabyte in one call would stop the event loop
# just the same. Each segment is scanned with OVERLAP characters of what follows it (look-
# behinds see what precedes it anyway), and keeps the matches that start in it: a match up
# to OVERLAP characters long is found as in one pass.
SEGMENT = 32_768
OVERLAP = 1_024


def _matches(pattern: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    if len(text) <= SEGMENT + OVERLAP:
        yield from pattern.finditer(text)
        return
    for start in range(0, len(text), SEGMENT):
        end = start + SEGMENT
        for match in pattern.finditer(text, start, end + OVERLAP):
            if match.start() >= end:
                break
            yield match


@dataclass(frozen=True, slots=True)
class Match:
    kind: str
    start: int
    end: int


class PIIDetector:
    """Finds personal data of the configured kinds (and the configured patterns) in text."""

    def __init__(self, entities: Iterable[str], patterns: dict[str, str]) -> None:
        chosen = set(entities)
        self.kinds: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
            (kind.upper(), re.compile(BUILT_IN[kind][0]), BUILT_IN[kind][1])
            for kind in ORDER if kind in chosen]
        self.kinds += [(name.upper(), re.compile(pattern), None)
                       for name, pattern in patterns.items()]

    def find(self, text: str) -> list[Match]:
        """The matches, in order, none overlapping (where two would, the earlier kind's wins).

        ``found`` stays in order and free of overlaps, so each new match is checked against
        the one kept match that could overlap it, found by a pointer that only moves on: a
        text with a hundred thousand matches costs as much per match as one with ten.
        """
        found: list[Match] = []
        for kind, pattern, check in self.kinds:
            fresh: list[Match] = []
            index = 0  # the first kept match that may end after this one starts
            for match in _matches(pattern, text):
                start, end = match.span()
                if start == end or (check is not None and not check(match.group())):
                    continue
                if fresh and start < fresh[-1].end:  # where two segments' scans meet
                    continue
                while index < len(found) and found[index].end <= start:
                    index += 1
                if index < len(found) and found[index].start < end:
                    continue
                fresh.append(Match(kind, start, end))
            found = sorted(found + fresh, key=lambda match: match.start)
        return found

    @staticmethod
    def redact(text: str, matches: list[Match]) -> str:
        parts: list[str] = []
        last = 0
        for match in matches:
            parts += [text[last:match.start], f"[{match.kind}]"]
            last = match.end
        parts.append(text[last:])
        return "".join(parts)


class PhraseDetector:
    """Any of a list of regular expressions (each compiled on its own, so that each may carry
    its own inline flags such as ``(?i)``)."""

    def __init__(self, phrases: Iterable[str], flags: int = 0) -> None:
        self.patterns = [re.compile(phrase, flags) for phrase in phrases]

    def search(self, text: str) -> bool:
        return any(next(_matches(pattern, text), None) is not None for pattern in self.patterns)

"""What a response cost: prices per million tokens, a small built-in table, the arithmetic.

A deployment's ``pricing:`` in the config always wins; the built-in table
only spares people typing the prices of the best-known hosted models. It is
data, dated, and goes stale: vendors change prices, so check before relying
on it for invoices. Unknown models cost nothing rather than a guess.

The table was checked on 2026-12-01 against the vendors' published price
lists (standard tier, no batch discount). Not modelled, so these under-count:
Anthropic's prompt-cache *writes* (billed above the input rate; the cached
rate here is the cache-read rate), long-context surcharges (e.g. Claude Sonnet
prompts over 200K tokens) and OpenAI's priority/flex tiers.

Dated snapshots share their alias's price (``gpt-4o-mini-2024-07-18``,
``claude-sonnet-4-5-20250929``) unless listed themselves, as the first
``gpt-4o`` snapshot is. Only a date (or ``-latest``) may follow a known id:
``o3-pro`` or ``gpt-4o-audio-preview`` are different products with other
prices, so they are unknown here, not priced as ``o3`` or ``gpt-4o``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PRICES_AS_OF = "2026-12-01"


@dataclass(frozen=True, slots=True)
class Price:
    """US$ per million tokens. ``cached_input``: prompt tokens read from the upstream's cache."""

    input: float
    output: float
    cached_input: float | None = None

    def __post_init__(self) -> None:
        if self.input < 0 or self.output < 0 or (self.cached_input or 0) < 0:
            raise ValueError("prices must not be negative")


BUILTIN_PRICES: dict[str, Price] = {
    # OpenAI
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-2024-05-13": Price(5.00, 15.00),  # the first snapshot kept its launch price
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "o3": Price(2.00, 8.00, 0.50),  # since the June 2025 price cut
    "o4-mini": Price(1.10, 4.40, 0.275),
    # Anthropic
    "claude-opus-4-1": Price(15.00, 75.00, 1.50),
    "claude-opus-4": Price(15.00, 75.00, 1.50),
    "claude-sonnet-4-5": Price(3.00, 15.00, 0.30),
    "claude-sonnet-4": Price(3.00, 15.00, 0.30),
    "claude-3-7-sonnet": Price(3.00, 15.00, 0.30),
    "claude-haiku-4-5": Price(1.00, 5.00, 0.10),
    "claude-3-5-haiku": Price(0.80, 4.00, 0.08),
}

# What may follow a known id: OpenAI dates, Anthropic dates, Vertex AI's @date, -latest.
_VARIANT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-latest")
_LONGEST_FIRST = sorted(BUILTIN_PRICES, key=len, reverse=True)


def price_for(upstream_model: str, override: Price | None) -> Price | None:
    """The override if any, else the built-in price of the id or of the id it is a dated variant
    of (the longest known prefix), else None: free or unknown."""
    if override is not None:
        return override
    exact = BUILTIN_PRICES.get(upstream_model)
    if exact is not None:
        return exact
    for known in _LONGEST_FIRST:
        if (upstream_model.startswith(known)
                and _VARIANT_SUFFIX.fullmatch(upstream_model, len(known)) is not None):
            return BUILTIN_PRICES[known]
    return None


def cost(price: Price | None, prompt_tokens: int, completion_tokens: int,
         cached_tokens: int = 0) -> float:
    """US$ for one call. ``cached_tokens`` are part of ``prompt_tokens`` and billed at
    ``cached_input`` (at ``input`` when the price has no cached rate)."""
    if price is None:
        return 0.0
    # Comparisons, not max()/min(): this runs for every request, and each builtin call
    # costs more than the arithmetic.
    prompt = prompt_tokens if prompt_tokens > 0 else 0
    completion = completion_tokens if completion_tokens > 0 else 0
    if cached_tokens <= 0:
        return (prompt * price.input + completion * price.output) / 1_000_000
    cached = cached_tokens if cached_tokens < prompt else prompt
    cached_rate = price.input if price.cached_input is None else price.cached_input
    return ((prompt - cached) * price.input + cached * cached_rate
            + completion * price.output) / 1_000_000

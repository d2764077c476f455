"""Prices: the built-in table, dated variants, overrides and the cost arithmetic."""

from __future__ import annotations

from typing import Any

import pytest

from llmport.accounting.pricing import BUILTIN_PRICES, Price, cost, price_for
from llmport.accounting.spend import Prices, cost_of
from llmport.config import ModelConfig
from llmport.gateway.context import CallContext
from llmport.types import Endpoint, Usage


def test_override_wins_over_the_table() -> None:
    mine = Price(1.0, 2.0)
    assert price_for("gpt-4o", mine) is mine
    assert price_for("my-local-model", mine) is mine


def test_known_ids_and_their_dated_variants() -> None:
    assert price_for("gpt-4o-mini", None) == Price(0.15, 0.60, 0.075)
    assert price_for("gpt-4o-mini-2024-07-18", None) == BUILTIN_PRICES["gpt-4o-mini"]
    assert price_for("gpt-4o-2024-08-06", None) == BUILTIN_PRICES["gpt-4o"]
    assert price_for("gpt-4.1-nano-2025-04-14", None) == BUILTIN_PRICES["gpt-4.1-nano"]
    assert price_for("claude-sonnet-4-5-20250929", None) == BUILTIN_PRICES["claude-sonnet-4-5"]
    assert price_for("claude-sonnet-4-5@20250929", None) == BUILTIN_PRICES["claude-sonnet-4-5"]
    assert price_for("claude-3-5-haiku-latest", None) == BUILTIN_PRICES["claude-3-5-haiku"]


def test_longest_known_prefix_wins() -> None:
    # "claude-opus-4" is a prefix of both; each id gets its own entry
    assert price_for("claude-opus-4-1-20250805", None) == BUILTIN_PRICES["claude-opus-4-1"]
    assert price_for("claude-opus-4-20250514", None) == BUILTIN_PRICES["claude-opus-4"]
    assert price_for("gpt-4.1-mini-2025-04-14", None) == BUILTIN_PRICES["gpt-4.1-mini"]


def test_a_listed_snapshot_keeps_its_own_price() -> None:
    assert price_for("gpt-4o-2024-05-13", None) == Price(5.00, 15.00)
    assert price_for("gpt-4o-2024-05-13", None) != BUILTIN_PRICES["gpt-4o"]


@pytest.mark.parametrize("model", [
    "o3-pro", "o3-mini", "gpt-4o-audio-preview", "gpt-4o-realtime-preview-2024-12-17",
    "claude-opus-4-5-20251101", "claude-sonnet-4-6", "gpt-4o-mini-tts", "llama-3.1-8b",
    "", "gpt-4o-2024", "xgpt-4o",
])
def test_other_products_and_unknown_models_are_unpriced(model: str) -> None:
    assert price_for(model, None) is None


def test_cost_of_plain_tokens() -> None:
    price = Price(2.50, 10.00, 1.25)
    assert cost(price, 1_000_000, 0) == pytest.approx(2.50)
    assert cost(price, 2_000, 500) == pytest.approx(2_000 * 2.5e-6 + 500 * 10e-6)


def test_cached_tokens_are_part_of_the_prompt_and_billed_at_the_cached_rate() -> None:
    price = Price(2.00, 8.00, 0.50)
    assert cost(price, 1_000, 100, cached_tokens=600) == pytest.approx(
        (400 * 2.00 + 600 * 0.50 + 100 * 8.00) / 1e6)


def test_cached_tokens_without_a_cached_rate_cost_the_input_rate() -> None:
    price = Price(1.0, 3.0)
    assert cost(price, 1_000, 10, cached_tokens=900) == pytest.approx(cost(price, 1_000, 10))


def test_cached_tokens_never_exceed_the_prompt_and_negatives_count_as_zero() -> None:
    price = Price(1.0, 3.0, 0.1)
    assert cost(price, 100, 0, cached_tokens=500) == pytest.approx(100 * 0.1 / 1e6)
    assert cost(price, -5, -5, cached_tokens=-5) == 0.0


def test_unknown_price_costs_nothing() -> None:
    assert cost(None, 10_000, 10_000, 5_000) == 0.0


def test_prices_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        Price(-1.0, 1.0)
    with pytest.raises(ValueError, match="negative"):
        Price(1.0, 1.0, -0.1)


def test_table_entries_are_sane() -> None:
    for model, price in BUILTIN_PRICES.items():
        assert model == model.strip().lower()
        assert price.output >= price.input > 0, model
        assert price.cached_input is None or price.cached_input < price.input, model


def _priced_call(deployment: str | None, usage: Usage | None, **state: Any) -> CallContext:
    ctx = CallContext("req_1", Endpoint.CHAT, {}, None, "public")
    ctx.deployment, ctx.usage = deployment, usage
    ctx.state.update(state)
    return ctx


PRICES = Prices([("dep-a", ModelConfig(name="public", provider="openai",
                                       api_base="http://127.0.0.1:9/v1",
                                       pricing={"input": 2.0, "output": 8.0,
                                                "cached_input": 0.5}))])


@pytest.mark.parametrize(("deployment", "usage", "expected"), [
    ("dep-a", Usage(1000, 500), 0.006),  # (1,000 * $2 + 500 * $8) / 1M
    ("dep-a", Usage(1000, 500, cached_tokens=400), 0.0054),  # 600 * $2 + 400 * $0.5 + 500 * $8
    ("dep-a", Usage(-5, 500), 0.004),  # a negative count is none
    # a deployment the book does not know: the price of the model that answered
    ("gone", Usage(1000, 500), 0.006),
    ("dep-a", None, 0.0),
])
def test_cost_of_a_call_prices_its_usage_at_its_deployment(
        deployment: str, usage: Usage | None, expected: float) -> None:
    ctx = _priced_call(deployment, usage)
    assert cost_of(ctx, PRICES) == pytest.approx(expected, rel=1e-12, abs=0)
    assert ctx.cost == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize("state", [{"cache": "hit"}, {"replayed": True}])
def test_cache_hits_and_replays_cost_nothing(state: dict[str, Any]) -> None:
    assert cost_of(_priced_call("dep-a", Usage(1000, 500), **state), PRICES) == 0.0


def test_a_call_is_priced_once() -> None:
    ctx = _priced_call("dep-a", Usage(1000, 500))
    first = cost_of(ctx, PRICES)
    ctx.usage = Usage(9999, 9999)  # the price kept on the context is the one charged
    assert cost_of(ctx, PRICES) == first

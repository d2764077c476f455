"""The x-ratelimit-* header values, formatted once and kept: the same text on every call."""

from __future__ import annotations

import pytest

from llmport.policies.rate_headers import count_text, reset_text


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0, b"0ms"), (-0.5, b"0ms"), (0.004, b"0ms"), (0.253, b"250ms"), (0.999, b"1s"),
    (1.0, b"1s"), (5.256, b"5.26s"), (59.83, b"59.8s"), (59.99, b"60s"), (75.0, b"1m15s"),
    (3725.0, b"1h2m5s"),
])
def test_reset_is_openai_duration_to_the_hundredth(seconds: float, text: bytes) -> None:
    assert reset_text(seconds) == text
    assert reset_text(seconds) == text  # the kept text, the second time


def test_limits_render_as_integers_and_are_kept() -> None:
    assert count_text(100_000_000.0) == b"100000000"
    assert count_text(100_000_000) == b"100000000"
    assert count_text(3.0) == b"3"
    assert count_text(3.0) is count_text(3.0)  # formatted once

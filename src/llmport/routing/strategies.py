"""Which deployment of a pool serves the next attempt.

Only deployments whose breaker lets traffic through are considered, and only
those of the best ``priority`` tier that has any (tier 2 is used only when
tier 1 has nothing healthy). Within the tier, the strategy picks:

* ``weighted``: at random, proportionally to ``weight`` (the default);
* ``least-busy``: fewest requests in flight;
* ``latency``: lowest moving average of recent latency (time to first output
  for streams); deployments without a measurement yet are tried first;
* ``cost``: lowest price per token.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence

from llmport.routing.deployment import Deployment
from llmport.routing.settings import Strategy


def choose(pool: Sequence[Deployment], strategy: Strategy, stream: bool,
           exclude: Collection[Deployment] = ()) -> Deployment | None:
    """The deployment to try next, or None if nothing in ``pool`` may take traffic now."""
    usable = [d for d in pool if d not in exclude and d.breaker.available()]
    if not usable:
        return None
    tier = min(d.config.priority for d in usable)
    candidates = [d for d in usable if d.config.priority == tier]
    if len(candidates) == 1:
        return candidates[0]
    return PICKERS[strategy](candidates, stream)


def _weighted(candidates: list[Deployment], stream: bool) -> Deployment:
    weights = [d.config.weight for d in candidates]
    if not any(weights):
        return random.choice(candidates)
    return random.choices(candidates, weights=weights)[0]


def _least_busy(candidates: list[Deployment], stream: bool) -> Deployment:
    return _lowest(candidates, lambda d: float(d.in_flight))


def _latency(candidates: list[Deployment], stream: bool) -> Deployment:
    def measured(d: Deployment) -> float:
        value = d.ttft_s if stream else d.latency_s
        return -1.0 if value is None else value  # unmeasured first: learn about it
    return _lowest(candidates, measured)


def _cost(candidates: list[Deployment], stream: bool) -> Deployment:
    return _lowest(candidates, lambda d: d.price)


def _lowest(candidates: list[Deployment], key: Callable[[Deployment], float]) -> Deployment:
    best = min(key(d) for d in candidates)
    return _weighted([d for d in candidates if key(d) == best], False)


PICKERS: dict[str, Callable[[list[Deployment], bool], Deployment]] = {
    "weighted": _weighted, "least-busy": _least_busy, "latency": _latency, "cost": _cost,
}

"""The ``router:`` section of the config: strategies, retries, fallbacks, breaker, hedging."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Strategy = Literal["weighted", "least-busy", "latency", "cost"]
StreamRescue = Literal["error", "continue"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BreakerConfig(_Strict):
    """When a deployment stops receiving traffic, and how it is let back in."""

    failure_threshold: int = Field(default=5, ge=1, description="consecutive failures that open it")
    error_rate: float = Field(default=0.5, gt=0, le=1, description="failure share that opens it")
    window: float = Field(default=30.0, gt=0, description="seconds the error rate is measured over")
    min_requests: int = Field(default=10, ge=1, description="requests in the window before rate")
    open_seconds: float = Field(default=10.0, gt=0, description="time open before one probe")


class ModelRouting(_Strict):
    """Per public model name: overrides of the router-wide defaults."""

    strategy: Strategy | None = None
    hedge_after: float | None = Field(default=None, gt=0, description=(
        "seconds without a first token before a second attempt starts on another deployment"))
    stream_rescue: StreamRescue | None = None


class RouterConfig(_Strict):
    strategy: Strategy = "weighted"
    num_retries: int = Field(default=2, ge=0, le=10, description="extra attempts per model")
    max_attempts: int = Field(default=8, ge=1, le=50, description="attempts per request, in all")
    request_timeout: float = Field(default=900.0, gt=0, description=(
        "seconds one request may spend in the router, retries and fallbacks included"))
    backoff_base: float = Field(default=0.2, ge=0, description="first backoff ceiling, seconds")
    backoff_max: float = Field(default=5.0, ge=0, description="largest backoff ceiling, seconds")
    max_retry_after: float = Field(default=20.0, ge=0, description=(
        "longest upstream Retry-After honoured by waiting; longer ones move on instead"))
    fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    context_window_fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    content_policy_fallbacks: dict[str, list[str]] = Field(default_factory=dict)
    stream_rescue: StreamRescue = Field(default="error", description=(
        "after content was streamed: end with an error event, or continue on a fallback"))
    circuit_breaker: BreakerConfig = BreakerConfig()
    models: dict[str, ModelRouting] = Field(default_factory=dict)

    def for_model(self, name: str) -> ModelRouting:
        return self.models.get(name) or _NO_OVERRIDES


_NO_OVERRIDES = ModelRouting()  # made once: a pydantic model costs ~2 µs to build

"""The ``observability:`` section of the config: metrics and tracing."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricsConfig(_Strict):
    enabled: bool = True
    path: str = Field(default="/metrics", pattern=r"^/")
    port: int | None = Field(default=None, ge=1, le=65535, description=(
        "serve /metrics on this separate port instead of the API port"))
    require_auth: bool = Field(default=False, description="scrapes need the master key")
    tenant_labels: bool = Field(default=True, description=(
        "label token and cost counters by tenant (off bounds cardinality)"))


class TracingConfig(_Strict):
    """OpenTelemetry tracing; the exporter reads the standard OTEL_* environment variables."""

    enabled: bool = False
    service_name: str = "llmport"
    exporter: Literal["otlp", "console", "none"] = Field(default="otlp", description=(
        "none: spans go only to processors added in code (tests, embedding)"))
    sample_ratio: float = Field(default=1.0, ge=0, le=1)


class ObservabilityConfig(_Strict):
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()

"""The ``batches:`` config section (``/v1/files`` and ``/v1/batches``; on by default)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BatchesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description=(
        "serve /v1/files and /v1/batches and run batch jobs (they keep their files and "
        "state in the database)"))
    max_file_mb: float = Field(default=200.0, gt=0, description="the largest file accepted")
    max_storage_mb: float | None = Field(default=10_240.0, gt=0, description=(
        "the most a key (or token subject) may keep in files: an upload past it is refused "
        "(batch outputs count toward it, and are always written; null: no limit)"))
    concurrent_uploads: int = Field(default=4, ge=1, description=(
        "uploads read at once per process (each spools its file to a temporary file, then "
        "stores it a part at a time); more wait"))
    max_lines: int = Field(default=50_000, ge=1, description="requests in one batch, at most")
    concurrency: int = Field(default=4, ge=1, le=1024, description=(
        "requests of one batch in flight at once, per replica"))
    priority: int = Field(default=-10, ge=-100, le=100, description=(
        "admission priority of batch requests (interactive ones are 0, so they go first "
        "when a deployment's queue is full)"))
    poll_interval: float = Field(default=5.0, gt=0, description=(
        "seconds between looks for batches to run (a batch made on this replica starts at "
        "once), and between looks at a running batch's state (cancelled? expired?)"))
    lease_seconds: float = Field(default=60.0, gt=0, description=(
        "a replica holds the batch it runs this long, renewed as it runs; a batch whose "
        "replica died is taken over once its lease runs out"))

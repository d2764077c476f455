"""The ``rag:`` config section (vector stores; on by default)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RagConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description=(
        "serve /v1/vector_stores (it needs the database and a model that serves embeddings)"))
    embedding_model: str | None = Field(default=None, description=(
        "the model of this config that embeds chunks and queries (default: the first one "
        "that serves embeddings); a store keeps the model it was made with"))
    embed_batch: int = Field(default=64, ge=1, le=2048, description=(
        "chunks embedded per embeddings request"))
    cached_stores: int = Field(default=32, ge=1, description=(
        "vector stores whose vectors a process keeps in memory for search"))
    cached_mb: float = Field(default=1024.0, gt=0, description=(
        "the most those vectors may take in a process (the store searched last is kept "
        "whatever its size)"))
    poll_interval: float = Field(default=5.0, gt=0, description=(
        "seconds between looks for files to index (a file added here starts at once)"))
    lease_seconds: float = Field(default=120.0, gt=0, description=(
        "a replica holds the file it indexes this long, renewed as it runs"))

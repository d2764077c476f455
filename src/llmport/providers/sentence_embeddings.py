"""Local embedding models through the ``sentence-transformers`` library, served in-process.

Requests arriving together are encoded together: a ``MicroBatcher`` joins
them into one forward pass (waiting at most ``batch_wait_ms`` for company),
run in a worker thread so the event loop keeps serving. The module is named
for what it serves, not for the library, so it cannot shadow it; the library
and torch are imported only when the model loads.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from llmport.errors import InvalidRequestError, UpstreamError
from llmport.providers.base import Capabilities, Provider
from llmport.providers.embedding_format import encode_embedding
from llmport.providers.local_runtime import (
    DEVICE_PATTERN,
    DType,
    require_local_stack,
    resolve_model_path,
    torch_device,
    torch_dtype,
)
from llmport.providers.micro_batcher import MicroBatcher
from llmport.types import Endpoint, JSONResult

if TYPE_CHECKING:
    from llmport.config import ModelConfig
    from llmport.gateway.context import CallContext

REQUIRED_MODULES = ("torch", "transformers", "sentence_transformers")
Embedded = tuple[list[float], int]  # a vector and the tokens its text counted


class SentenceEmbeddingsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(default="auto", pattern=DEVICE_PATTERN)
    dtype: DType = "auto"
    max_batch_size: int = Field(default=32, ge=1, le=4096,
                                description="texts per forward pass")
    batch_wait_ms: float = Field(default=5.0, ge=0, le=1000,
                                 description="longest wait for other requests to batch with")
    normalize: bool = Field(default=True, description="unit-length vectors, as OpenAI's are")
    truncatable: bool = Field(default=False,
                              description="the model is trained for truncated vectors "
                                          "(Matryoshka): honour `dimensions`")
    load_at_startup: bool = False
    trust_remote_code: bool = False


class SentenceEmbeddingsProvider(Provider):
    Options = SentenceEmbeddingsOptions
    capabilities = Capabilities(endpoints=frozenset({Endpoint.EMBEDDINGS}), streaming=False,
                                stream_usage=False)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self._model: Any = None
        self.dimensions = 0
        self._load_lock = asyncio.Lock()
        options: SentenceEmbeddingsOptions = self.options
        self.batcher: MicroBatcher[str, Embedded] = MicroBatcher(
            self._encode, max_batch=options.max_batch_size,
            max_wait=options.batch_wait_ms / 1000, name="llmport-embed")

    async def start(self) -> None:
        require_local_stack(self.config.provider, REQUIRED_MODULES)
        if self.options.load_at_startup:
            await self._ready()

    async def aclose(self) -> None:
        self.batcher.close()
        self._model = None

    async def _ready(self) -> None:
        if self._model is not None:
            return
        async with self._load_lock:
            if self._model is None:
                self._model = await asyncio.to_thread(self._load)

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        options: SentenceEmbeddingsOptions = self.options
        try:
            device = torch_device(options.device)
            model = SentenceTransformer(
                resolve_model_path(self.config.upstream_model), device=device,
                trust_remote_code=options.trust_remote_code,
                model_kwargs={"dtype": torch_dtype(options.dtype, device)})
        except Exception as exc:
            raise UpstreamError(f"{self.name} could not load its model: "
                                f"{type(exc).__name__}: {exc}",
                                code="model_load_failed") from exc
        dimension = getattr(model, "get_embedding_dimension", None) \
            or model.get_sentence_embedding_dimension
        self.dimensions = int(dimension())
        return model

    def _encode(self, texts: list[str]) -> list[Embedded]:
        """One forward pass over a batch (worker thread): vectors and token counts."""
        model = self._model
        vectors = model.encode(texts, batch_size=self.options.max_batch_size,
                               normalize_embeddings=self.options.normalize,
                               convert_to_numpy=True, show_progress_bar=False)
        ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)
        return [(vector.tolist(), len(tokens))
                for vector, tokens in zip(vectors, ids["input_ids"], strict=True)]

    async def complete(self, ctx: CallContext, endpoint: Endpoint,
                       request: dict[str, Any]) -> JSONResult:
        if endpoint is not Endpoint.EMBEDDINGS:
            raise self.unsupported(endpoint)
        texts = _texts(request.get("input"), self.config.name)
        await self._ready()
        dims = self._dimensions(request.get("dimensions"))
        embedded = await self.batcher.submit(texts)
        fmt = request.get("encoding_format") or "float"
        data = [{"object": "embedding", "index": i,
                 "embedding": encode_embedding(self._shape(vector, dims), fmt)}
                for i, (vector, _) in enumerate(embedded)]
        tokens = sum(count for _, count in embedded)
        return JSONResult({"object": "list", "data": data, "model": self.config.name,
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def _dimensions(self, asked: Any) -> int | None:
        if asked is None or asked == self.dimensions:
            return None
        if not self.options.truncatable:
            raise InvalidRequestError(
                f"Model `{self.config.name}` returns {self.dimensions}-dimensional vectors and "
                "is not configured for shorter ones (`truncatable`); omit `dimensions`.",
                param="dimensions", code="unsupported_value")
        if asked > self.dimensions:
            raise InvalidRequestError(
                f"'dimensions' must be at most {self.dimensions} for `{self.config.name}`.",
                param="dimensions", code="invalid_value")
        return int(asked)

    def _shape(self, vector: list[float], dims: int | None) -> list[float]:
        if dims is None:
            return vector
        vector = vector[:dims]
        if self.options.normalize:
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vector = [v / norm for v in vector]
        return vector


def _texts(value: Any, model: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise InvalidRequestError(
        f"Model `{model}` is a local embedding model: `input` must be a string or an array of "
        "strings (token arrays are ids of another tokenizer).", param="input",
        code="unsupported_value")

"""Causal language models from HuggingFace ``transformers``, served in-process.

The model (a local directory, ``package:…`` inside an installed Python
package, or a hub id) loads on first use, or at start-up with
``load_at_startup``, in a thread so the event loop keeps serving. Each
request's generation runs in one of ``max_concurrency`` worker threads
(``GenerationSlots``); more requests wait in line. Text reaches the client
as each token step produces it, and a client that goes away stops its
generation within one step (see ``hf_engine``).

torch and transformers are imported only when the model loads: configuring
this provider costs nothing until then, and a gateway without it never
imports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from llmport.errors import UpstreamError
from llmport.providers.base import Capabilities, Provider
from llmport.providers.generation_slots import GenerationSlots
from llmport.providers.hf_request import (
    Counted,
    GenerationRequest,
    Piece,
    chat_request,
    completion_request,
)
from llmport.providers.local_runtime import (
    DEVICE_PATTERN,
    DType,
    require_local_stack,
    resolve_model_path,
)
from llmport.providers.local_wire import CompletionWire
from llmport.types import Chunk, Endpoint, JSONResult

if TYPE_CHECKING:
    from llmport.config import ModelConfig
    from llmport.gateway.context import CallContext
    from llmport.providers.hf_engine import CausalLM, GenerationJob

REQUIRED_MODULES = ("torch", "transformers")


class HuggingFaceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field(default="auto", pattern=DEVICE_PATTERN,
                        description="auto, cpu, cuda, cuda:N or mps")
    dtype: DType = Field(default="auto", description="auto = float32 on CPU, else the "
                                                     "checkpoint's dtype")
    load_at_startup: bool = False
    max_new_tokens: int = Field(default=512, ge=1,
                                description="tokens generated when a chat request sets no "
                                            "max_tokens")
    trust_remote_code: bool = False
    chat_template: str | None = Field(default=None,
                                      description="Jinja chat template overriding the "
                                                  "tokenizer's")


class HuggingFaceProvider(Provider):
    Options = HuggingFaceOptions
    capabilities = Capabilities(endpoints=frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS}),
                                tools=False, prefill=True, stream_usage=True)
    default_max_concurrency = 1

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        # The router's admission queue (the deployment's `max_concurrency`, default 1 here)
        # decides who runs and who waits, by priority; the slots keep the same bound on the
        # threads themselves, which outlive a cancelled request by up to one token step.
        self.slots = GenerationSlots(self.name, config.max_concurrency or 1)
        self.generated_tokens = 0  # across all requests, cancelled ones included
        self._lm: CausalLM | None = None
        self._load_lock = asyncio.Lock()
        self._jobs: set[GenerationJob] = set()

    async def start(self) -> None:
        require_local_stack(self.config.provider, REQUIRED_MODULES)
        if self.options.load_at_startup:
            await self.model()

    async def aclose(self) -> None:
        for job in list(self._jobs):
            job.cancel()
        self.slots.shutdown()
        if self._lm is not None:
            self._lm.close()
            self._lm = None

    async def model(self) -> CausalLM:
        """The loaded model, loading it on first use (once, however many requests ask)."""
        if self._lm is not None:
            return self._lm
        async with self._load_lock:
            if self._lm is None:
                self._lm = await asyncio.to_thread(self._load)
        return self._lm

    def _load(self) -> CausalLM:
        from llmport.providers.hf_engine import CausalLM

        options: HuggingFaceOptions = self.options
        try:
            path = resolve_model_path(self.config.upstream_model)
            return CausalLM.load(self.config.name, path, device=options.device,
                                 dtype=options.dtype,
                                 trust_remote_code=options.trust_remote_code,
                                 chat_template=options.chat_template)
        except Exception as exc:
            raise UpstreamError(f"{self.name} could not load its model: "
                                f"{type(exc).__name__}: {exc}",
                                code="model_load_failed") from exc

    def _request(self, endpoint: Endpoint, request: dict[str, Any]) -> GenerationRequest:
        if endpoint is Endpoint.CHAT:
            return chat_request(request, self.config.name)
        if endpoint is Endpoint.COMPLETIONS:
            return completion_request(request, self.config.name)
        raise self.unsupported(endpoint)

    async def complete(self, ctx: CallContext, endpoint: Endpoint,
                       request: dict[str, Any]) -> JSONResult:
        spec = self._request(endpoint, request)
        wire = CompletionWire(endpoint, self.config.name, spec.n)
        texts: list[list[str]] = [[] for _ in range(spec.n)]
        finishes: list[str | None] = [None] * spec.n
        counted = Counted(0, 0)
        async with aclosing(self._generate(spec)) as events:
            async for event in events:
                if isinstance(event, Counted):
                    counted = event
                    continue
                for piece in event:
                    texts[piece.index].append(piece.text)
                    finishes[piece.index] = piece.finish_reason or finishes[piece.index]
        return JSONResult(wire.body(texts, finishes, counted))

    async def stream(self, ctx: CallContext, endpoint: Endpoint,
                     request: dict[str, Any]) -> AsyncIterator[Chunk]:
        spec = self._request(endpoint, request)
        wire = CompletionWire(endpoint, self.config.name, spec.n)
        opened = False
        # aclosing: when the client goes, the generation is cancelled now, not at GC time.
        async with aclosing(self._generate(spec)) as events:
            async for event in events:
                if not opened:  # after the slot and the prompt: earlier errors are plain 4xx/5xx
                    opened = True
                    for chunk in wire.opening():
                        yield chunk
                if isinstance(event, Counted):
                    yield wire.usage_chunk(event)
                else:
                    for chunk in wire.chunks(event):
                        yield chunk

    async def _generate(self, spec: GenerationRequest
                        ) -> AsyncGenerator[list[Piece] | Counted, None]:
        """Run one generation in a worker thread; yield its pieces as they come, then counts.

        Leaving early (the consumer closed or cancelled) cancels the job: the
        thread stops at its next token step and only then frees its slot.
        """
        lm = await self.model()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[Piece] | None] = asyncio.Queue()

        def emit(pieces: list[Piece] | None) -> None:  # called from the generation thread
            loop.call_soon_threadsafe(queue.put_nowait, pieces)

        job = lm.job(spec, emit)
        self._jobs.add(job)
        future: asyncio.Future[Counted] | None = None
        try:
            future = await self.slots.start(partial(job.run, self.options.max_new_tokens))
            future.add_done_callback(lambda _: queue.put_nowait(None))  # even if it never ran
            while (pieces := await queue.get()) is not None:
                yield pieces
            yield await future
        finally:
            job.cancel()
            self._jobs.discard(job)
            if future is not None:
                future.add_done_callback(partial(self._count, job))

    def _count(self, job: GenerationJob, _: asyncio.Future[Counted]) -> None:
        if job.sink is not None:
            self.generated_tokens += job.sink.completion_tokens


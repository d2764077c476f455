"""The provider protocol: the seam between the gateway and a backend.

A provider instance serves one deployment (one config entry). It takes
requests in OpenAI wire form and returns results in OpenAI wire form; a
vendor with another dialect translates inside its own module. Failures are
raised as the ``llmport.errors`` tree, translated where they enter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from llmport.errors import InvalidRequestError
from llmport.types import Chunk, Endpoint, JSONResult

if TYPE_CHECKING:
    from llmport.config import ModelConfig
    from llmport.gateway.context import CallContext


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider can do, as data: the router and policies read it, never branch on names."""

    endpoints: frozenset[Endpoint] = frozenset({Endpoint.CHAT})
    streaming: bool = True
    tools: bool = False
    vision: bool = False
    json_schema: bool = False
    prefill: bool = False  # continues a trailing assistant message
    stream_usage: bool = True  # reports usage at the end of a stream


class Provider:
    """Base class of every provider; subclasses override what they support."""

    Options: ClassVar[type[BaseModel]] = NoOptions
    capabilities: Capabilities = Capabilities()  # per class; an instance may refine it
    # The deployment's concurrency cap when its config sets no `max_concurrency`
    # (None = unbounded); local models, which thrash when overcommitted, set 1.
    default_max_concurrency: ClassVar[int | None] = None

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.options: Any = config.options

    @property
    def name(self) -> str:
        """A label for logs and metrics: public name and upstream id."""
        return f"{self.config.name}/{self.config.provider}:{self.config.upstream_model}"

    async def start(self) -> None:
        """Open pools, load weights; called once before the first request."""

    async def aclose(self) -> None:
        """Release everything ``start`` acquired."""

    def supports(self, endpoint: Endpoint) -> bool:
        return endpoint in self.capabilities.endpoints

    async def complete(self, ctx: CallContext, endpoint: Endpoint,
                       request: dict[str, Any]) -> JSONResult:
        """Answer a non-streamed request (chat, completions or embeddings)."""
        raise self.unsupported(endpoint)

    def stream(self, ctx: CallContext, endpoint: Endpoint,
               request: dict[str, Any]) -> AsyncIterator[Chunk]:
        """Answer a streamed request, yielding OpenAI chunks as they are produced.

        The upstream call starts on the first ``__anext__``; closing the
        iterator (or cancelling the task iterating it) must stop the upstream
        work at once.
        """
        raise self.unsupported(endpoint)

    async def count_tokens(self, ctx: CallContext, request: dict[str, Any]) -> int | None:
        """The exact input tokens of an OpenAI-form chat ``request``, if this provider can tell.

        ``None`` (the default) means it cannot, and the caller estimates. A
        provider with a counting endpoint or its model's tokenizer overrides it.
        """
        return None

    def unsupported(self, endpoint: Endpoint) -> InvalidRequestError:
        return InvalidRequestError(
            f"Model `{self.config.name}` does not support the {endpoint.value} endpoint.",
            param="model", code="unsupported_endpoint")

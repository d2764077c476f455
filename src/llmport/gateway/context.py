"""CallContext: everything one request carries through the pipeline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from llmport.types import ANONYMOUS, Endpoint, Principal, Usage


@dataclass(slots=True, eq=False)
class CallContext:
    """One request's state, created by the API layer and read by every policy.

    ``body`` is the request in OpenAI wire form. ``raw_body`` is the client's
    exact bytes for it, kept so an unchanged body is forwarded without
    re-serialising; whoever changes ``body`` must set ``raw_body`` to ``None``.
    """

    request_id: str
    endpoint: Endpoint
    body: dict[str, Any]
    raw_body: bytes | None
    model: str
    stream: bool = False
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    client_ip: str | None = None
    dialect: str = "openai"  # the wire API the client speaks: "openai" | "anthropic" | "responses"
    principal: Principal = ANONYMOUS
    started: float = field(default_factory=perf_counter)
    # Filled in as the call proceeds:
    deployment: str | None = None  # the deployment that answered (or last tried)
    served_model: str | None = None  # the public model name that answered (after fallbacks)
    attempts: int = 0
    upstream_s: float = 0.0  # time spent waiting on upstreams, for the overhead header
    overhead_s: float | None = None  # the gateway's own time, fixed when the response starts
    first_token_at: float | None = None
    skipped_chunks: int = 0  # malformed upstream stream events dropped
    usage: Usage | None = None
    cost: float | None = None  # US$, once priced (accounting.spend.cost_of)
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # policies add
    outbound_headers: dict[bytes, bytes] = field(default_factory=dict)  # e.g. the traceparent
    trace_id: str | None = None
    trace: Any = None  # the tracing subscriber's record of this request, when tracing is on
    authenticated_at: float | None = None
    finish_reason: str | None = None  # of the first choice, as the upstream reported it
    marks: list[tuple[str, float]] | None = None  # policy entry times, when traced
    state: dict[str, Any] = field(default_factory=dict)  # scratch space for policies
    # Run by the API layer once the response is over (sent, failed or abandoned): policies
    # settle what they took at admission (token corrections, spend, concurrency leases).
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The headers by name, made at the first header() call: a request asks for five or
    # six (request id, credentials, priority, idempotency key, traceparent…), and a scan
    # of a real client's dozen and more headers for each cost more than one dict.
    _by_name: dict[bytes, bytes] | None = field(default=None, init=False, repr=False)

    def header(self, name: bytes) -> bytes | None:
        """A request header by lower-case name (ASGI keeps them lower-case); the first of
        repeated ones."""
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = dict(reversed(self.headers))
        return by_name.get(name)

    @property
    def include_usage(self) -> bool:
        """Whether the client asked for the final usage chunk of a stream."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    @property
    def ttft_s(self) -> float | None:
        """Seconds from arrival to the first output token, for streams that produced one."""
        first = self.first_token_at
        return None if first is None else first - self.started

    def elapsed(self) -> float:
        return perf_counter() - self.started

    def mark_response_start(self) -> float:
        """Fix the overhead (time not spent waiting on an upstream) as the response starts."""
        self.overhead_s = max(0.0, self.elapsed() - self.upstream_s)
        return self.overhead_s

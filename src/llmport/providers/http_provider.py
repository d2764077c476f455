"""What every HTTP provider shares: one ``HTTPClient`` per deployment, the deployment's limits,
and the header lines that change per request."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from llmport import __version__
from llmport.providers.base import Provider
from llmport.providers.http_client import HTTPClient, Limits, Response

if TYPE_CHECKING:
    from llmport.config import ModelConfig
    from llmport.gateway.context import CallContext

USER_AGENT = f"llmport/{__version__}"


class HTTPProvider(Provider):
    """A provider that POSTs JSON to one upstream origin (its options' ``api_base``)."""

    # The client's request headers passed on upstream (the gateway's own win over them).
    forwarded_headers: ClassVar[tuple[bytes, ...]] = (b"traceparent", b"tracestate")

    def __init__(self, config: ModelConfig, headers: dict[str, str]) -> None:
        """``headers``: the deployment's fixed headers (credentials, API version, its own)."""
        super().__init__(config)
        self.limits = Limits(config.timeout, config.headers_timeout)
        self.stream_limits = Limits(config.timeout, config.headers_timeout,
                                    config.stream_idle_timeout)
        self.client = HTTPClient(
            self.options.api_base, label=self.name,
            headers=with_user_agent({"content-type": "application/json", **headers}),
            connect_timeout=config.connect_timeout, max_connections=self.options.max_connections)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def post(self, ctx: CallContext, path: str, payload: bytes,
                   limits: Limits) -> Response:
        """Send ``payload`` and wait for the response's headers (its body is read from it)."""
        return await self.client.request(b"POST", path, payload,
                                         request_head(ctx, self.forwarded_headers), limits)


def with_user_agent(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` with llmport's user-agent unless they name one."""
    if not any(name.lower() == "user-agent" for name in headers):
        headers["user-agent"] = USER_AGENT
    return headers


def request_head(ctx: CallContext, forwarded: tuple[bytes, ...]) -> bytes:
    """The header lines that change per request: the request id, the client's headers named in
    ``forwarded`` and the gateway's own (its trace span), which win over the client's."""
    head = b"x-request-id: " + ctx.request_id.encode() + b"\r\n"
    outbound = ctx.outbound_headers
    # A client's tracestate belongs to its traceparent: once the gateway sends its own
    # traceparent, it sends the tracestate that goes with it, if any, and never the client's.
    traced = b"traceparent" in outbound
    for key, value in ctx.headers:
        if key in forwarded and key not in outbound and b"\r" not in value \
                and b"\n" not in value and not (traced and key == b"tracestate"):
            head += key + b": " + value + b"\r\n"
    if outbound:  # made by the gateway, never from client input
        for key, value in outbound.items():
            head += key + b": " + value + b"\r\n"
    return head

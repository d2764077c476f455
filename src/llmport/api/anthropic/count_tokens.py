"""``POST /v1/messages/count_tokens``: the input tokens of a Messages request, for any model.

Exact when a deployment of the model can count (``Provider.count_tokens``:
the Messages provider asks its upstream, the demo model counts as it bills);
otherwise an estimate, documented in the README: about four characters per
token over every text the model reads (system, messages, tool results, tool
definitions), three tokens per message, and 1,600 per image or document
(the most one image costs once the Messages API has resized it). The
``x-llmport-token-count`` response header says which: ``exact`` or ``estimate``.

Counting generates nothing and costs nothing, so it skips the policy pipeline
(limits, budgets) but honours the key's model allow-list.
"""

from __future__ import annotations

import orjson
import structlog

from llmport.api.anthropic.validation import validate_messages
from llmport.api.asgi import (
    Receive,
    Scope,
    Send,
    error_headers,
    read_body,
    request_id_from,
    send_response,
)
from llmport.api.openai.validation import parse_json_object
from llmport.errors import LLMPortError, ModelNotFoundError
from llmport.gateway.context import CallContext
from llmport.gateway.gateway import Gateway
from llmport.policies.estimate import estimate_input_tokens
from llmport.translation.messages_to_openai import chat_request
from llmport.types import Endpoint

log = structlog.get_logger("llmport.count_tokens")


class CountTokensRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.max_body = int(gateway.config.server.max_request_mb * 1024 * 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = CallContext(request_id_from(scope["headers"]), Endpoint.CHAT, {}, None, "",
                          headers=scope["headers"], dialect="anthropic")
        headers = [(b"x-request-id", ctx.request_id.encode()),
                   (b"request-id", ctx.request_id.encode())]
        try:
            principal = await self.gateway.authenticator.authenticate(ctx)
            body = parse_json_object(await read_body(receive, self.max_body))
            ctx.model, _ = validate_messages(body, count_only=True)
            ctx.body = chat_request(body)
            allowed = principal.allowed_models
            if allowed is not None and ctx.model not in allowed:
                raise ModelNotFoundError(ctx.model)
            tokens, how = await self.count(ctx)
            headers.append((b"x-llmport-token-count", how))
            await send_response(send, 200, orjson.dumps({"input_tokens": tokens}), headers)
        except LLMPortError as exc:
            await send_response(send, exc.status_code, exc.anthropic_json(),
                                headers + error_headers(exc))
        except Exception:  # the boundary: a bug must still answer in the envelope
            log.exception("count_tokens failed", request_id=ctx.request_id)
            internal = LLMPortError("The gateway failed to count the tokens.")
            await send_response(send, 500, internal.anthropic_json(), headers)

    async def count(self, ctx: CallContext) -> tuple[int, bytes]:
        for deployment in self.gateway.router.pool(ctx.model):
            counted = await deployment.provider.count_tokens(ctx, ctx.body)
            if counted is not None:
                return counted, b"exact"
        return estimate_input_tokens(ctx.body), b"estimate"

"""``GET /v1/models`` and ``GET /v1/models/{id}``: the public model names of the config."""

from __future__ import annotations

import time

import orjson

from llmport.api.asgi import Receive, Scope, Send, request_id_from, send_response
from llmport.errors import LLMPortError, ModelNotFoundError
from llmport.gateway.context import CallContext
from llmport.gateway.gateway import Gateway
from llmport.types import Endpoint

PREFIX = "/v1/models/"


class ModelsRoute:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        created = int(time.time())
        self.models = {name: {"id": name, "object": "model", "created": created,
                              "owned_by": "llmport"}
                       for name in gateway.config.model_names}
        self.listing = orjson.dumps({"object": "list", "data": list(self.models.values())})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = CallContext(request_id_from(scope["headers"]), Endpoint.CHAT, {}, None, "",
                          headers=scope["headers"])
        headers = [(b"x-request-id", ctx.request_id.encode())]
        try:
            principal = await self.gateway.authenticator.authenticate(ctx)
            path: str = scope["path"]
            if path.startswith(PREFIX) or path.startswith(PREFIX[3:]):
                model_id = path.split("/models/", 1)[1]
                model = self.models.get(model_id)
                allowed = principal.allowed_models
                if model is None or (allowed is not None and model_id not in allowed):
                    raise ModelNotFoundError(model_id)
                await send_response(send, 200, orjson.dumps(model), headers)
            elif principal.allowed_models is None:
                await send_response(send, 200, self.listing, headers)
            else:
                visible = [m for n, m in self.models.items() if n in principal.allowed_models]
                await send_response(send, 200, orjson.dumps({"object": "list", "data": visible}),
                                    headers)
        except LLMPortError as exc:
            await send_response(send, exc.status_code, exc.openai_json(), headers)

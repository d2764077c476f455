"""The offline demo model: deterministic, paced like a real model, honest usage.

It is what ``llmport serve`` shows out of the box and what tests lean on. The
answer is derived from the prompt (same prompt, same answer), streamed token
by token; it honours ``n``, ``max_tokens``, ``stop``, ``logprobs``,
``response_format``, and calls a tool when the request forces one (or the
user names it). Every response says, in its model id and text, that it is a demo.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from llmport.errors import InvalidRequestError
from llmport.gateway.context import CallContext
from llmport.providers.base import Capabilities, Provider
from llmport.providers.embedding_format import embedding_inputs, encode_embedding
from llmport.types import Chunk, Endpoint, JSONResult, Usage

TOKEN = re.compile(r"\s*\S+")
COUNTED = re.compile(r"\w+|[^\w\s]")
MAX_DIMENSIONS = 8192  # of the demo's vectors, asked for or configured


class DemoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    first_token_ms: float = Field(default=120.0, ge=0, description="pause before the first token")
    token_delay_ms: float = Field(default=25.0, ge=0, description="pause between tokens")
    embedding_dimensions: int = Field(default=256, ge=1, le=MAX_DIMENSIONS)


class DemoProvider(Provider):
    Options = DemoOptions
    capabilities = Capabilities(
        endpoints=frozenset({Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.EMBEDDINGS}),
        tools=True, json_schema=True, prefill=True, stream_usage=True)

    @property
    def model_id(self) -> str:
        upstream = self.config.upstream_model
        return upstream if "demo" in upstream else f"{upstream}-demo"

    async def complete(self, ctx: CallContext, endpoint: Endpoint,
                       request: dict[str, Any]) -> JSONResult:
        if endpoint is Endpoint.EMBEDDINGS:
            return JSONResult(self._embeddings(request))
        answer = DemoAnswer(request, endpoint)
        choices = [answer.choice(i) for i in range(answer.n)]
        data = {"id": answer.id, "object": answer.object, "created": answer.created,
                "model": self.model_id, "choices": choices,
                "usage": answer.usage().to_openai()}
        if endpoint is Endpoint.CHAT:
            data["system_fingerprint"] = "fp_llmport_demo"
        return JSONResult(data)

    async def stream(self, ctx: CallContext, endpoint: Endpoint,
                     request: dict[str, Any]) -> AsyncIterator[Chunk]:
        if endpoint is Endpoint.EMBEDDINGS:
            raise self.unsupported(endpoint)
        answer = DemoAnswer(request, endpoint)
        options: DemoOptions = self.options
        await _pause(options.first_token_ms)
        for index, piece in enumerate(answer.stream_pieces()):
            if index and piece.get("paced", True):
                await _pause(options.token_delay_ms)
            yield Chunk(answer.chunk(self.model_id, piece["choices"]))
        yield Chunk(answer.chunk(self.model_id, [], usage=answer.usage().to_openai()))

    async def count_tokens(self, ctx: CallContext, request: dict[str, Any]) -> int | None:
        """Exact: the prompt tokens this model bills for ``request``."""
        return DemoAnswer(request, Endpoint.CHAT).usage().prompt_tokens

    def _embeddings(self, request: dict[str, Any]) -> dict[str, Any]:
        inputs = embedding_inputs(request.get("input"))
        dims = int(request.get("dimensions") or self.options.embedding_dimensions)
        if dims > MAX_DIMENSIONS:
            raise InvalidRequestError(f"'dimensions' must be at most {MAX_DIMENSIONS} for the "
                                      f"demo model, got {dims}.", param="dimensions",
                                      code="invalid_value")
        fmt = request.get("encoding_format") or "float"
        data = [{"object": "embedding", "index": i, "embedding": encode_embedding(_vector(t, dims),
                                                                                   fmt)}
                for i, t in enumerate(inputs)]
        tokens = sum(_count(t) for t in inputs)
        return {"object": "list", "data": data, "model": self.model_id,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def _pause(ms: float) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000.0)


def _count(text: str) -> int:
    return len(COUNTED.findall(text))


def _vector(text: str, dims: int) -> list[float]:
    """A unit vector from hashed word features: similar texts get similar vectors."""
    vector = [0.0] * dims
    for word in re.findall(r"\w+", text.lower()) or [text]:
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % dims
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def message_text(content: Any) -> str:
    """The text of a message's content, whether a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content
                        if isinstance(part, dict) and part.get("type") in ("text", "input_text"))
    return ""


class DemoAnswer:
    """What the demo says to one request, and how it is shaped on the wire."""

    def __init__(self, request: dict[str, Any], endpoint: Endpoint) -> None:
        self.request = request
        self.chat = endpoint is Endpoint.CHAT
        self.object = "chat.completion" if self.chat else "text_completion"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + "demo" + secrets.token_hex(10)
        self.created = int(time.time())
        self.n = int(request.get("n") or 1)
        self.logprobs = bool(request.get("logprobs")) if self.chat else False
        self.prompt = self._prompt_text()
        self.tool_call = self._tool_call() if self.chat else None
        self.tokens, self.finish_reason = self._tokens()

    # -- what to say -------------------------------------------------------------------
    def _prompt_text(self) -> str:
        if not self.chat:
            return _prompt_words(self.request.get("prompt"))
        return "\n".join(message_text(m.get("content"))
                         for m in self.request.get("messages") or [] if isinstance(m, dict))

    def _last(self, role: str) -> dict[str, Any] | None:
        messages = self.request.get("messages") or []
        return messages[-1] if messages and messages[-1].get("role") == role else None

    def _text(self) -> str:
        if self.chat and (tool_result := self._last("tool")) is not None:
            return f"The tool returned: {message_text(tool_result.get('content'))[:200]}"
        user = ""
        for message in reversed(self.request.get("messages") or []):
            if message.get("role") == "user":
                user = message_text(message.get("content"))
                break
        if not self.chat:
            user = self.prompt
        words = user.split()
        quote = " ".join(words[:12]) + (" …" if len(words) > 12 else "")
        text = (f"This is llmport's offline demo model. You wrote {len(words)} words"
                + (f', starting "{quote}"' if quote else "")
                + ". Point a model at a real provider in your config to get real answers.")
        if _json_mode(self.request):
            return orjson.dumps(_json_answer(self.request, text)).decode()
        prefill = self._last("assistant") if self.chat else None
        if prefill is not None:  # continue the assistant's own start, as prefill-capable models do
            return " (continued by the demo model)"
        return text

    def _tokens(self) -> tuple[list[str], str]:
        if self.tool_call is not None:
            return [], "tool_calls"
        tokens = TOKEN.findall(self._text())
        limit = self.request.get("max_completion_tokens") or self.request.get("max_tokens")
        text = "".join(tokens)
        stops = self.request.get("stop")
        stops = [stops] if isinstance(stops, str) else [s for s in stops or [] if s]
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        finish = "stop"
        if cut >= 0:
            tokens = TOKEN.findall(text[:cut]) if text[:cut].strip() else []
        if isinstance(limit, int) and len(tokens) > limit:
            tokens, finish = tokens[:limit], "length"
        return tokens, finish

    def _tool_call(self) -> dict[str, Any] | None:
        # Function tools with a name (what is not one is left out: the demo answers rather
        # than judge the request).
        tools = [t for t in self.request.get("tools") or [] if t.get("type") == "function"
                 and isinstance(t.get("function"), dict)
                 and isinstance(t["function"].get("name"), str)]
        choice = self.request.get("tool_choice", "auto")
        if not tools or choice == "none" or self._last("tool") is not None:
            return None
        if isinstance(choice, dict):
            chosen = choice.get("function")
            wanted = chosen.get("name") if isinstance(chosen, dict) else None
            tool = next((t for t in tools if t["function"].get("name") == wanted), None)
        elif choice == "required":
            tool = tools[0]
        else:
            last = (self._last("user") or {}).get("content")
            text = message_text(last).lower()
            tool = next((t for t in tools if t["function"]["name"].lower() in text), None)
        if tool is None:
            return None
        function = tool["function"]
        parameters = function.get("parameters")
        arguments = _example_for(parameters if isinstance(parameters, dict) else {})
        return {"id": "call_demo" + secrets.token_hex(8), "type": "function",
                "function": {"name": function.get("name"), "arguments": orjson.dumps(arguments)
                             .decode()}}

    def usage(self) -> Usage:
        completion = len(self.tokens) if self.tool_call is None else _count(
            self.tool_call["function"]["arguments"]) + 1
        return Usage(prompt_tokens=_count(self.prompt) + 3, completion_tokens=completion * self.n)

    # -- how it looks on the wire ------------------------------------------------------------
    def _logprobs(self, tokens: list[str]) -> dict[str, Any] | None:
        if not self.logprobs:
            return None
        return {"content": [{"token": t, "logprob": 0.0, "bytes": list(t.encode()),
                             "top_logprobs": []} for t in tokens], "refusal": None}

    def choice(self, index: int) -> dict[str, Any]:
        text = "".join(self.tokens)
        if not self.chat:
            return {"index": index, "text": text, "logprobs": None,
                    "finish_reason": self.finish_reason}
        message: dict[str, Any] = {"role": "assistant", "content": text,
                                   "refusal": None, "annotations": []}
        if self.tool_call is not None:
            message["content"] = None
            message["tool_calls"] = [self.tool_call]
        return {"index": index, "message": message, "logprobs": self._logprobs(self.tokens),
                "finish_reason": self.finish_reason}

    def stream_pieces(self) -> Iterator[dict[str, Any]]:
        """Each streamed step as ``{"choices": [...]}``: role, tokens, finish."""
        if not self.chat:
            for token in self.tokens:
                yield {"choices": [self._text_choice(i, token, None) for i in range(self.n)]}
            yield {"choices": [self._text_choice(i, "", self.finish_reason)
                               for i in range(self.n)], "paced": False}
            return
        yield {"choices": [self._delta(i, {"role": "assistant", "content": "", "refusal": None})
                           for i in range(self.n)], "paced": False}
        if self.tool_call is not None:
            call, args = self.tool_call, self.tool_call["function"]["arguments"]
            head = {"index": 0, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}
            yield {"choices": [self._delta(i, {"tool_calls": [head]}) for i in range(self.n)]}
            for piece in re.findall(r".{1,8}", args, re.S):
                delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                yield {"choices": [self._delta(i, delta) for i in range(self.n)]}
        for token in self.tokens:
            yield {"choices": [self._delta(i, {"content": token}, [token]) for i in range(self.n)]}
        yield {"choices": [self._delta(i, {}, finish=self.finish_reason) for i in range(self.n)],
               "paced": False}

    def _delta(self, index: int, delta: dict[str, Any], tokens: list[str] | None = None,
               finish: str | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta,
                "logprobs": self._logprobs(tokens) if tokens else None, "finish_reason": finish}

    @staticmethod
    def _text_choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}

    def chunk(self, model: str, choices: list[dict[str, Any]],
              usage: dict[str, Any] | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "object": self.object + (".chunk" if self.chat
                                                                        else ""),
                                "created": self.created, "model": model, "choices": choices}
        if self.chat:
            data["system_fingerprint"] = "fp_llmport_demo"
        if usage is not None:
            data["usage"] = usage
        return data


def _prompt_words(prompt: Any) -> str:
    """A completions prompt as text: a string, strings, token ids or arrays of them (the demo
    has no tokenizer: ids read as numbers)."""
    if isinstance(prompt, list):
        return " ".join(_prompt_words(part) for part in prompt)
    return prompt if isinstance(prompt, str) else str(prompt if prompt is not None else "")


def _json_mode(request: dict[str, Any]) -> bool:
    fmt = request.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _json_answer(request: dict[str, Any], text: str) -> Any:
    fmt = request["response_format"]
    spec = fmt.get("json_schema") if fmt["type"] == "json_schema" else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return _example_for(schema) if isinstance(schema, dict) and schema else {"answer": text}


def _example_for(schema: dict[str, Any]) -> Any:
    """A small value that satisfies a JSON schema's types and required properties (what is not
    a schema is read as an empty one: the demo answers rather than judge the client's)."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties")
        return {name: _example_for(sub if isinstance(sub, dict) else {})
                for name, sub in (properties.items() if isinstance(properties, dict) else ())}
    return {"string": "demo", "integer": 1, "number": 1.0, "boolean": True,
            "array": [], "null": None}.get(str(kind), "demo")

"""Checks of OpenAI request bodies: the fields the gateway relies on, and clear errors.

The body is parsed once with orjson and forwarded as the client's bytes, so
only what the gateway needs (and what a provider without its own validation
needs) is checked here, in a few dictionary lookups. Unknown fields pass
through: upstreams have extensions (``top_k``, ``guided_json``…).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import orjson

from llmport.errors import InvalidRequestError

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# OpenAI's own limit on inputs a request; and a bound on dimensions far above any model's
# (3,072 is OpenAI's largest): a local model must not be asked for a vector of 10^12 floats.
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_DIMENSIONS = 65_536

Kinds = tuple[type, ...]
INT: Kinds = (int,)
NUM: Kinds = (int, float)
BOOL: Kinds = (bool,)
STR: Kinds = (str,)
_KIND_NAMES: dict[Kinds, str] = {INT: "an integer", NUM: "a number", BOOL: "a boolean",
                                 STR: "a string"}
# field -> (accepted types, minimum, maximum); bool is excluded from numbers below.
_CHAT_FIELDS: dict[str, tuple[Kinds, float | None, float | None]] = {
    "n": (INT, 1, 128),
    "max_tokens": (INT, 1, None),
    "max_completion_tokens": (INT, 1, None),
    "temperature": (NUM, 0, 2),
    "top_p": (NUM, 0, 1),
    "presence_penalty": (NUM, -2, 2),
    "frequency_penalty": (NUM, -2, 2),
    "seed": (INT, None, None),
    "top_logprobs": (INT, 0, 20),
    "logprobs": (BOOL, None, None),
    "stream": (BOOL, None, None),
    "user": (STR, None, None),
    "parallel_tool_calls": (BOOL, None, None),
}
_COMPLETION_FIELDS = {**_CHAT_FIELDS, "logprobs": (INT, 0, 5), "echo": (BOOL, None, None),
                      "best_of": (INT, 1, 20), "suffix": (STR, None, None)}


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    return body


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _missing("model") if model is None else _bad("model", "a non-empty string")
    return model


def check_stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream", "a boolean")
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise InvalidRequestError(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options", code="invalid_value")
        if not isinstance(options, dict):
            raise _bad("stream_options", "an object")
    return stream


def validate_chat(body: dict[str, Any]) -> tuple[str, bool]:
    model = require_model(body)
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array.", param="messages",
                                  code="invalid_value")
    for index, message in enumerate(messages):
        _check_message(index, message)
    check_fields(body, _CHAT_FIELDS)
    _check_stop(body)
    tools = body.get("tools")
    if tools is not None and not (isinstance(tools, list)
                                  and all(isinstance(t, dict) for t in tools)):
        raise _bad("tools", "an array of tool objects")
    return model, check_stream(body)


def validate_completion(body: dict[str, Any]) -> tuple[str, bool]:
    model = require_model(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise _missing("prompt")
    if not isinstance(prompt, str | list) or (
            isinstance(prompt, list) and not all(map(_prompt_item, prompt))):
        raise _bad("prompt", "a string, an array of strings, of token ids or of arrays of "
                             "token ids")
    check_fields(body, _COMPLETION_FIELDS)
    _check_stop(body)
    return model, check_stream(body)


def validate_embedding(body: dict[str, Any]) -> tuple[str, bool]:
    model = require_model(body)
    value = body.get("input")
    if value is None:
        raise _missing("input")
    if not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise _bad("input", "a non-empty string or array")
    if isinstance(value, list) and len(value) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequestError(f"'input' must have at most {MAX_EMBEDDING_INPUTS} items, "
                                  f"got {len(value)}.", param="input", code="invalid_value")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise InvalidRequestError("'encoding_format' must be 'float' or 'base64'.",
                                  param="encoding_format", code="invalid_value")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise _bad("dimensions", "a positive integer")
    if dims is not None and dims > MAX_EMBEDDING_DIMENSIONS:
        raise InvalidRequestError(f"'dimensions' must be at most {MAX_EMBEDDING_DIMENSIONS}, "
                                  f"got {dims}.", param="dimensions", code="invalid_value")
    return model, False


def _prompt_item(item: Any) -> bool:
    """A string, a token id or an array of token ids: what a completions prompt array holds."""
    if isinstance(item, list):
        return all(_token_id(token) for token in item)
    return isinstance(item, str) or _token_id(item)


def _token_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_message(index: int, message: Any) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequestError(f"'{where}' must be an object.", param=where,
                                  code="invalid_type")
    role = message.get("role")
    if not isinstance(role, str) or role not in ROLES:  # (a list or object is unhashable)
        if role is None:
            raise _missing(f"{where}.role")
        raise InvalidRequestError(
            f"Invalid value for '{where}.role': {role!r}. Supported values are: "
            + ", ".join(f"'{r}'" for r in sorted(ROLES)) + ".",
            param=f"{where}.role", code="invalid_value")
    content = message.get("content")
    if content is None:
        if role in ("assistant", "function"):  # a tool-calling turn has no content
            return
        raise _missing(f"{where}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not all(isinstance(p, dict) and isinstance(
            p.get("type"), str) for p in content):
        raise _bad(f"{where}.content", "a string or an array of content parts")


def check_fields(body: dict[str, Any],
                 fields: Mapping[str, tuple[Kinds, float | None, float | None]]) -> None:
    """Each present field of ``fields`` (name → accepted types, minimum, maximum) has a
    type and value in range; 400 naming the first that has not (the Responses API's
    checks use it too)."""
    for name, (types, low, high) in fields.items():
        value: Any = body.get(name)
        if value is None:
            continue
        numeric = types is not BOOL and types is not STR
        if not isinstance(value, types) or (numeric and isinstance(value, bool)):
            raise _bad(name, _KIND_NAMES[types])
        if not numeric:
            continue
        number = cast(float, value)
        if (low is not None and number < low) or (high is not None and number > high):
            bounds = (f"between {low:g} and {high:g}" if low is not None and high is not None
                      else f"at least {low:g}" if low is not None else f"at most {high:g}")
            raise InvalidRequestError(f"Invalid '{name}': must be {bounds}, got {value}.",
                                      param=name, code="invalid_value")


def _check_stop(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise _bad("stop", "a string or an array of up to 4 strings")


def _missing(param: str) -> InvalidRequestError:
    return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param,
                               code="missing_required_parameter")


def _bad(param: str, expected: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid type for '{param}': expected {expected}.", param=param,
                               code="invalid_type")
